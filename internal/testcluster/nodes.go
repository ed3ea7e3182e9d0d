package testcluster

import (
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/agent"
	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/membership"
)

// Agent is one agent process of a test.
type Agent struct {
	*Proc
	Name string
	Addr string // HOST:PORT of its API, which supernodes probe
}

// StartAgent starts an agent named name, listening on host:7430 with its
// data in dir, through start (Cluster.Start or Host.Start), joined to the
// federation of first with a token of its own. It writes agent.yaml first,
// with the rest of the configuration set by configure, since checks,
// services and HA groups have no flags.
func StartAgent(t testing.TB, first *Supernode, creds, name, host, dir string,
	start func(name string, args ...string) *Proc, configure func(*agent.Config)) *Agent {
	t.Helper()
	token, err := first.Admin("token", "create", "--credentials", creds)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(host, "7430")
	cfg := agent.Config{
		Name:    name,
		Join:    []string{first.URL},
		CAHash:  first.CAHash,
		Profile: membership.Profile{Project: "CMIP6", Site: "Site " + name, Address: addr},
		Listen:  addr,
	}
	configure(&cfg)
	if err := agent.SaveConfig(dir, cfg); err != nil {
		t.Fatal(err)
	}
	p := start(name, "agent", "--data-dir", dir, "--token", strings.TrimSpace(token))
	return &Agent{Proc: p, Name: name, Addr: addr}
}

// AdminClient is an administrator client of exactly this supernode, with
// no failover, so that what it sees is this supernode's answer.
func (sn *Supernode) AdminClient(t testing.TB) *client.Client {
	t.Helper()
	cr, err := client.LoadCredentials(sn.Credentials)
	if err != nil {
		t.Fatal(err)
	}
	c, err := cr.ClientFor([]string{sn.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdle)
	return c
}

// ExitStatus waits for p to exit and returns its exit status.
func ExitStatus(t testing.TB, p *Proc) int {
	t.Helper()
	err := p.Wait(60 * time.Second)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.Name, err)
	return 0
}
