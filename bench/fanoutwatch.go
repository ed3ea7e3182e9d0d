package bench

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// fanoutWatch follows the agents' state directories with inotify, so that
// the time an agent's manifest is renamed into place is taken when it
// happens, without polling a thousand files. The manifest is the last
// thing an apply writes once the files are in place and synced.
type fanoutWatch struct {
	fd int
	f  *os.File

	mu   sync.Mutex
	dirs map[int32]int // watch descriptor to agent
	n    int

	// overflows counts events lost because the kernel's queue was full;
	// every manifest is then read again.
	overflows atomic.Int64
}

func newFanoutWatch() (*fanoutWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	// A non-blocking descriptor goes to the runtime's poller, so a read
	// waits without a thread and Close ends it.
	return &fanoutWatch{fd: fd, f: os.NewFile(uintptr(fd), "inotify"), dirs: map[int32]int{}}, nil
}

// add follows the manifest of agent i in dir.
func (w *fanoutWatch) add(dir string, i int) error {
	wd, err := unix.InotifyAddWatch(w.fd, dir, unix.IN_MOVED_TO)
	if err != nil {
		return fmt.Errorf("inotify watch on %s: %w (see /proc/sys/fs/inotify/max_user_watches)", dir, err)
	}
	w.mu.Lock()
	w.dirs[int32(wd)] = i
	w.n = max(w.n, i+1)
	w.mu.Unlock()
	return nil
}

// run reads events until close, timestamps each as it is read and hands
// it to readers goroutines calling changed.
func (w *fanoutWatch) run(readers int, changed func(i int, at time.Time)) {
	type event struct {
		i  int
		at time.Time
	}
	ch := make(chan event, 1<<16)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for ev := range ch {
				changed(ev.i, ev.at)
			}
		})
	}
	defer wg.Wait()
	defer close(ch)
	buf := make([]byte, 256<<10)
	const header = unix.SizeofInotifyEvent
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return
		}
		at := time.Now()
		for off := 0; off+header <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := strings.TrimRight(string(buf[off+header:off+header+nameLen]), "\x00")
			off += header + nameLen
			if mask&unix.IN_Q_OVERFLOW != 0 {
				w.overflows.Add(1)
				w.mu.Lock()
				all := w.n
				w.mu.Unlock()
				for i := range all {
					ch <- event{i, at}
				}
				continue
			}
			if name != fanoutManifest {
				continue
			}
			w.mu.Lock()
			i, ok := w.dirs[wd]
			w.mu.Unlock()
			if ok {
				ch <- event{i, at}
			}
		}
	}
}

func (w *fanoutWatch) close() { w.f.Close() }
