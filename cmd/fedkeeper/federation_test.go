package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/client"
	"github.com/fedkeeper/fedkeeper/internal/testcluster"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
)

// nodes lists the federation's nodes by name, as an administrator sees them.
func nodes(t *testing.T, sn *testcluster.Supernode) map[string]membership.Node {
	t.Helper()
	out, err := sn.Admin("nodes", "list", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list []membership.Node
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nodes list -o json: %v\n%s", err, out)
	}
	m := map[string]membership.Node{}
	for _, n := range list {
		m[n.Name] = n
	}
	return m
}

func waitStatus(t *testing.T, sn *testcluster.Supernode, want map[string]membership.Status) {
	t.Helper()
	testcluster.Eventually(t, 60*time.Second, func() error {
		got := nodes(t, sn)
		for name, st := range want {
			n, ok := got[name]
			switch {
			case st == "" && ok:
				return fmt.Errorf("%s still listed (%s)", name, n.Status)
			case st != "" && !ok:
				return fmt.Errorf("%s not listed", name)
			case st != "" && n.Status != st:
				return fmt.Errorf("%s is %s, want %s", name, n.Status, st)
			}
		}
		return nil
	})
}

// nodeClient is an API client holding the identity of the agent in dir.
func nodeClient(t *testing.T, dir string, server string) *client.Client {
	t.Helper()
	kp, err := pki.LoadKeyPair(filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCert(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	return client.New([]string{server}, pki.ClientTLS(kp, ca))
}

func apiCode(err error) string {
	var e *client.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return fmt.Sprintf("not an API error: %v", err)
}

func TestFederationJoinsSurvivesKillAndEnforcesIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := testcluster.New(t)
	sn := c.InitSupernode("sn1", "--federation", "testfed", "--session-ttl", "3s")
	ctx := context.Background()

	tokenOut, err := sn.Admin("token", "create", "--uses", "2", "--ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(tokenOut)

	agent := func(name string, extra ...string) *testcluster.Proc {
		host := testcluster.NewHost()
		args := append([]string{"agent", "--data-dir", c.Dir(name), "--join", sn.URL, "--ca-hash", sn.CAHash,
			"--name", name, "--project", "CMIP6", "--site", "Site " + name, "--listen", host + ":7430"}, extra...)
		return c.Start(name, args...)
	}
	a1 := agent("a1", "--token", token, "--lat", "37.68", "--lon", "-121.77",
		"--endpoint", "IndexService=https://a1.example.org/esg-search", "--endpoint", "ThreddsService=https://a1.example.org/thredds")
	a2 := agent("a2", "--token", token)
	a3 := agent("a3") // no token: waits for approval

	waitStatus(t, sn, map[string]membership.Status{"a1": membership.StatusAlive, "a2": membership.StatusAlive, "a3": membership.StatusPending, "sn1": membership.StatusAlive})

	t.Run("token is used up after its uses", func(t *testing.T) {
		a4 := agent("a4", "--token", token)
		if err := a4.Wait(30 * time.Second); err == nil || !strings.Contains(a4.Log(), "used up") {
			t.Fatalf("a4 joined with a used-up token or failed otherwise: %v\n%s", err, a4.Log())
		}
	})

	if _, err := sn.Admin("nodes", "approve", "a3"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, sn, map[string]membership.Status{"a3": membership.StatusAlive})
	before := nodes(t, sn)

	t.Run("nothing is lost when the supernode is killed", func(t *testing.T) {
		sn.Kill()
		sn.Restart()
		sn.WaitLive(t)
		// Agents keep or renew their sessions against the restarted store.
		waitStatus(t, sn, map[string]membership.Status{"a1": membership.StatusAlive, "a2": membership.StatusAlive, "a3": membership.StatusAlive, "sn1": membership.StatusAlive})
		after := nodes(t, sn)
		for name, b := range before {
			a := after[name]
			if a.CertSerial != b.CertSerial || !a.JoinedAt.Equal(b.JoinedAt) || a.Site != b.Site || a.Address != b.Address {
				t.Errorf("%s changed across kill -9: before %+v after %+v", name, b, a)
			}
		}
	})

	t.Run("an agent cannot change another node's record", func(t *testing.T) {
		c1 := nodeClient(t, c.Dir("a1"), sn.URL)
		err := c1.Do(ctx, http.MethodPatch, "/v1/nodes/a2", membership.Profile{Site: "hijacked"}, nil)
		if apiCode(err) != "forbidden" {
			t.Fatalf("PATCH of a2 by a1: want forbidden, got %v", err)
		}
		err = c1.Do(ctx, http.MethodDelete, "/v1/nodes/a2", nil, nil)
		if apiCode(err) != "forbidden" {
			t.Fatalf("DELETE of a2 by a1: want forbidden, got %v", err)
		}
		if got := nodes(t, sn)["a2"]; got.Site != "Site a2" || got.Status != membership.StatusAlive {
			t.Fatalf("a2 changed: %+v", got)
		}
	})

	t.Run("no or a foreign certificate gets nothing", func(t *testing.T) {
		anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		for _, path := range []string{"/v1/nodes", "/v1/nodemap", "/v1/nodes/a1"} {
			resp, err := anon.Get(sn.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("GET %s without certificate: HTTP %d, want 401", path, resp.StatusCode)
			}
		}
		foreign, err := pki.NewCA("testfed") // same name, different CA
		if err != nil {
			t.Fatal(err)
		}
		key, _ := pki.NewKey()
		csrPEM, _ := pki.NewCSR(key, "admin")
		csr, _ := pki.ParseCSR(csrPEM, "admin")
		cert, err := foreign.Sign(csr, pki.Request{Name: "admin", Role: pki.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg := &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}
		fc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
		resp, err := fc.Get(sn.URL + "/v1/nodes")
		if err == nil {
			resp.Body.Close()
			t.Fatalf("foreign admin certificate accepted: HTTP %d", resp.StatusCode)
		}
	})

	t.Run("registration.xml validates against the ESGF schema", func(t *testing.T) {
		if _, err := exec.LookPath("xmllint"); err != nil {
			t.Skip("xmllint not installed (Debian package libxml2-utils)")
		}
		xml, err := sn.Admin("nodemap", "--format", "registration-xml")
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(t.TempDir(), "registration.xml")
		os.WriteFile(f, []byte(xml), 0o644)
		out, err := exec.Command("xmllint", "--noout", "--schema", "../../membership/testdata/registration.xsd", f).CombinedOutput()
		if err != nil {
			t.Fatalf("xmllint: %v\n%s\n%s", err, out, xml)
		}
		for _, want := range []string{`shortName="a1"`, `<GeoLocation`, `lat="37.68"`, `<IndexService endpoint="https://a1.example.org/esg-search"`, `shortName="sn1"`, sn.CAHash} {
			if !strings.Contains(xml, want) {
				t.Errorf("registration.xml lacks %s:\n%s", want, xml)
			}
		}
	})

	t.Run("restarting an agent reuses its identity without a token", func(t *testing.T) {
		serial := nodes(t, sn)["a3"].CertSerial
		a3.Kill()
		a3 = c.Start("a3", "agent", "--data-dir", c.Dir("a3"))
		testcluster.Eventually(t, 30*time.Second, func() error {
			if n := strings.Count(a3.Log(), "agent running"); n != 2 {
				return fmt.Errorf("a3 started %d times, want 2", n)
			}
			return nil
		})
		if n := strings.Count(a3.Log(), "admitted to the federation"); n != 1 {
			t.Fatalf("a3 was admitted %d times, want once:\n%s", n, a3.Log())
		}
		waitStatus(t, sn, map[string]membership.Status{"a3": membership.StatusAlive})
		if got := nodes(t, sn)["a3"].CertSerial; got != serial {
			t.Fatalf("a3 has a new certificate %s, want %s", got, serial)
		}
	})

	t.Run("SIGTERM makes an agent leave", func(t *testing.T) {
		a1.Signal(syscall.SIGTERM)
		if err := a1.Wait(20 * time.Second); err != nil {
			t.Fatalf("a1 did not exit cleanly: %v\n%s", err, a1.Log())
		}
		waitStatus(t, sn, map[string]membership.Status{"a1": ""})
	})

	t.Run("leave takes a stopped agent's node out", func(t *testing.T) {
		a2.Kill()
		waitStatus(t, sn, map[string]membership.Status{"a2": membership.StatusGone})
		if _, err := c.Run("leave", "--data-dir", c.Dir("a2")); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, sn, map[string]membership.Status{"a2": ""})
		if _, err := os.Stat(filepath.Join(c.Dir("a2"), "node.crt")); !os.IsNotExist(err) {
			t.Fatalf("a2's certificate is still on disk after leaving: %v", err)
		}
	})

	t.Run("an administrator removes a node and its agent stops", func(t *testing.T) {
		if _, err := sn.Admin("nodes", "remove", "a3"); err != nil {
			t.Fatal(err)
		}
		if err := a3.Wait(30 * time.Second); err == nil || !strings.Contains(a3.Log(), "removed from the federation") {
			t.Fatalf("a3 kept running or exited for another reason: %v\n%s", err, a3.Log())
		}
		if _, err := sn.Admin("nodes", "remove", "sn1"); err == nil {
			t.Fatal("removing a supernode with nodes remove succeeded")
		}
	})
}
