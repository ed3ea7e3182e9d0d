package metrics

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

var (
	cpuSecondsDesc = prometheus.NewDesc("fedkeeper_host_cpu_seconds_total",
		"Seconds the host's CPUs spent in each mode since boot, summed over all CPUs (guest time is inside user and nice, as in /proc/stat).",
		[]string{"mode"}, nil)
	cpusDesc = prometheus.NewDesc("fedkeeper_host_cpus",
		"Number of CPUs the host's kernel lists in /proc/stat.", nil, nil)
	memTotalDesc = prometheus.NewDesc("fedkeeper_host_memory_total_bytes",
		"Memory the kernel can use (MemTotal).", nil, nil)
	memAvailableDesc = prometheus.NewDesc("fedkeeper_host_memory_available_bytes",
		"Memory available for new work without swapping (MemAvailable).", nil, nil)
	load1Desc = prometheus.NewDesc("fedkeeper_host_load1",
		"Host load average over 1 minute.", nil, nil)
	load5Desc = prometheus.NewDesc("fedkeeper_host_load5",
		"Host load average over 5 minutes.", nil, nil)
	load15Desc = prometheus.NewDesc("fedkeeper_host_load15",
		"Host load average over 15 minutes.", nil, nil)
	diskTotalDesc = prometheus.NewDesc("fedkeeper_host_disk_total_bytes",
		"Size of the filesystem holding the path.", []string{"path"}, nil)
	diskFreeDesc = prometheus.NewDesc("fedkeeper_host_disk_free_bytes",
		"Space left for unprivileged use on the filesystem holding the path (df's Avail).", []string{"path"}, nil)
	bootTimeDesc = prometheus.NewDesc("fedkeeper_host_boot_time_seconds",
		"Time the host booted, in seconds since the Unix epoch.", nil, nil)
)

// hostCollector reads /proc and statfs on every scrape. Each source fails
// alone: an unreadable /proc/meminfo still leaves the load and CPU figures.
type hostCollector struct {
	dataDir string
	proc    procfs.FS
	procErr error // from opening /proc; reported on every scrape
}

func newHostCollector(dataDir string) *hostCollector {
	fs, err := procfs.NewDefaultFS()
	return &hostCollector{dataDir: dataDir, proc: fs, procErr: err}
}

func (c *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		cpuSecondsDesc, cpusDesc, memTotalDesc, memAvailableDesc,
		load1Desc, load5Desc, load15Desc, diskTotalDesc, diskFreeDesc, bootTimeDesc,
	} {
		ch <- d
	}
}

func (c *hostCollector) Collect(ch chan<- prometheus.Metric) {
	if c.procErr != nil {
		ch <- prometheus.NewInvalidMetric(cpuSecondsDesc, fmt.Errorf("opening /proc: %w", c.procErr))
	} else {
		c.collectStat(ch)
		c.collectMeminfo(ch)
		c.collectLoad(ch)
	}
	if c.dataDir != "" {
		c.collectDisk(ch)
	}
}

func (c *hostCollector) collectStat(ch chan<- prometheus.Metric) {
	st, err := c.proc.Stat()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(cpuSecondsDesc, fmt.Errorf("reading /proc/stat: %w", err))
		return
	}
	t := st.CPUTotal
	// Guest and guest_nice are left out: the kernel already counts them in
	// user and nice, and summing all modes must give the CPUs' total time.
	for _, m := range []struct {
		mode string
		v    float64
	}{
		{"user", t.User}, {"nice", t.Nice}, {"system", t.System}, {"idle", t.Idle},
		{"iowait", t.Iowait}, {"irq", t.IRQ}, {"softirq", t.SoftIRQ}, {"steal", t.Steal},
	} {
		ch <- prometheus.MustNewConstMetric(cpuSecondsDesc, prometheus.CounterValue, m.v, m.mode)
	}
	ch <- prometheus.MustNewConstMetric(cpusDesc, prometheus.GaugeValue, float64(len(st.CPU)))
	ch <- prometheus.MustNewConstMetric(bootTimeDesc, prometheus.GaugeValue, float64(st.BootTime))
}

func (c *hostCollector) collectMeminfo(ch chan<- prometheus.Metric) {
	mi, err := c.proc.Meminfo()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(memTotalDesc, fmt.Errorf("reading /proc/meminfo: %w", err))
		return
	}
	if mi.MemTotalBytes != nil {
		ch <- prometheus.MustNewConstMetric(memTotalDesc, prometheus.GaugeValue, float64(*mi.MemTotalBytes))
	}
	// MemAvailable is missing only on kernels older than 3.14; guessing it
	// from MemFree and caches would be wrong often enough to mislead.
	if mi.MemAvailableBytes != nil {
		ch <- prometheus.MustNewConstMetric(memAvailableDesc, prometheus.GaugeValue, float64(*mi.MemAvailableBytes))
	}
}

func (c *hostCollector) collectLoad(ch chan<- prometheus.Metric) {
	la, err := c.proc.LoadAvg()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(load1Desc, fmt.Errorf("reading /proc/loadavg: %w", err))
		return
	}
	ch <- prometheus.MustNewConstMetric(load1Desc, prometheus.GaugeValue, la.Load1)
	ch <- prometheus.MustNewConstMetric(load5Desc, prometheus.GaugeValue, la.Load5)
	ch <- prometheus.MustNewConstMetric(load15Desc, prometheus.GaugeValue, la.Load15)
}

func (c *hostCollector) collectDisk(ch chan<- prometheus.Metric) {
	var st unix.Statfs_t
	if err := unix.Statfs(c.dataDir, &st); err != nil {
		ch <- prometheus.NewInvalidMetric(diskTotalDesc, fmt.Errorf("statfs %s: %w", c.dataDir, err))
		return
	}
	// Statfs_t's field types differ between systems (Bsize is signed on
	// Linux, Bavail on FreeBSD); the sizes themselves are never negative.
	bsize := uint64(st.Bsize)
	ch <- prometheus.MustNewConstMetric(diskTotalDesc, prometheus.GaugeValue, float64(uint64(st.Blocks)*bsize), c.dataDir)
	ch <- prometheus.MustNewConstMetric(diskFreeDesc, prometheus.GaugeValue, float64(uint64(st.Bavail)*bsize), c.dataDir)
}
