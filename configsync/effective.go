package configsync

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

// Verify lists how local files differ from commit c: what a publish of
// them would change.
func Verify(local map[string][]byte, c Commit) []Change {
	refs := map[string]FileRef{}
	for p, b := range local {
		refs[p] = FileRef{SHA256: hashOf(b), Size: len(b)}
	}
	return diffRefs(c.Files, refs)
}

// chain is the layers that make up a component's configuration on a node,
// weakest first.
func chain(project, component, node string) []Layer {
	layers := []Layer{{Project: project}, {Project: project, Component: component}}
	if node != "" {
		layers = append(layers, Layer{Project: project, Component: component, Node: node})
	}
	return layers
}

// Effective merges the project's, the component's and (with node) the
// node's layers into what the node applies. All heads are read in one
// store transaction, so the result is one consistent moment.
func (s *Store) Effective(ctx context.Context, project, component, node string) (Effective, error) {
	if component == "" {
		return Effective{}, fmt.Errorf("%w: the effective configuration is a component's: give the component", ErrInvalid)
	}
	layers := chain(project, component, node)
	ops := make([]clientv3.Op, len(layers))
	for i, l := range layers {
		if err := l.Validate(); err != nil {
			return Effective{}, err
		}
		ops[i] = clientv3.OpGet(l.key() + "/head")
	}
	resp, err := s.kv.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return Effective{}, fmt.Errorf("read configuration heads: %w", err)
	}
	eff := Effective{Project: project, Component: component, Node: node}
	seqs := make([]int64, len(layers))
	merged := map[string][]byte{}
	for i, l := range layers {
		var head Head
		if kvs := resp.Responses[i].GetResponseRange().Kvs; len(kvs) == 1 {
			// The newest change of a head, not the store's revision: other
			// writes must not wake agents waiting for their configuration.
			eff.Revision = max(eff.Revision, kvs[0].ModRevision)
			if err := json.Unmarshal(kvs[0].Value, &head); err != nil {
				return Effective{}, fmt.Errorf("decode head of %s: %w", l, err)
			}
		}
		seqs[i] = head.Seq
		if head.Seq == 0 {
			continue
		}
		c, err := s.Commit(ctx, l, head.Seq)
		if err != nil {
			return Effective{}, err
		}
		files, err := s.Files(ctx, c)
		if err != nil {
			return Effective{}, err
		}
		for _, f := range files {
			merged[f.Path] = overlay(f.Path, merged[f.Path], f.Content)
		}
	}
	eff.Version = fmt.Sprintf("p%d.c%d", seqs[0], seqs[1])
	if node != "" {
		eff.Version += fmt.Sprintf(".n%d", seqs[2])
	}
	for _, p := range slices.Sorted(maps.Keys(merged)) {
		eff.Files = append(eff.Files, File{Path: p, Content: merged[p], SHA256: hashOf(merged[p])})
	}
	if eff.Files == nil {
		eff.Files = []File{}
	}
	return eff, nil
}

// overlay lays file upper over lower: properties files merge key by key,
// others are replaced whole.
func overlay(path string, lower, upper []byte) []byte {
	if lower == nil || !strings.HasSuffix(path, ".properties") {
		return upper
	}
	return MergeProperties(lower, upper)
}

// MergeProperties merges two Java properties files: every line of base
// stays where it is, with the value of a key that upper sets replaced;
// keys only upper has follow at the end in its order. Comments and blank
// lines of base are kept; upper's are not, since they would land out of
// place.
func MergeProperties(base, upper []byte) []byte {
	overrides := map[string]string{}
	var order []string
	for _, line := range propertyLines(upper) {
		if k, _, ok := propertyKey(line); ok {
			if _, seen := overrides[k]; !seen {
				order = append(order, k)
			}
			overrides[k] = line
		}
	}
	var out bytes.Buffer
	used := map[string]bool{}
	for _, line := range propertyLines(base) {
		if k, _, ok := propertyKey(line); ok {
			if o, ok := overrides[k]; ok {
				line, used[k] = o, true
			}
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	for _, k := range order {
		if !used[k] {
			out.WriteString(overrides[k])
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// propertyLines splits a properties file into logical lines: a line ending
// in an odd number of backslashes continues on the next. As in Java's
// Properties.load, lines end with "\n", "\r" or "\r\n", comment lines
// never continue, and a backslash followed by trailing blanks escapes a
// blank rather than the line end.
func propertyLines(b []byte) []string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	// A line may be as long as the largest file; the scanner must also
	// hold its end, or it stops and the rest is lost.
	sc.Buffer(make([]byte, 64<<10), MaxFileBytes+2)
	sc.Split(scanPropertyLine)
	var cur strings.Builder
	for sc.Scan() {
		line := sc.Text()
		if t := strings.TrimLeft(line, " \t\f"); cur.Len() == 0 && t != "" && (t[0] == '#' || t[0] == '!') {
			lines = append(lines, line)
			continue
		}
		cur.WriteString(line)
		n := len(line) - len(strings.TrimRight(line, "\\"))
		if n%2 == 1 {
			cur.WriteByte('\n')
			continue
		}
		lines = append(lines, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		lines = append(lines, cur.String())
	}
	return lines
}

// scanPropertyLine is bufio.ScanLines with a lone "\r" also ending a line:
// a line it left inside another would be lost when the other is replaced.
func scanPropertyLine(data []byte, atEOF bool) (advance int, token []byte, err error) {
	i := bytes.IndexAny(data, "\r\n")
	switch {
	case i < 0 && atEOF && len(data) > 0:
		return len(data), data, nil
	case i < 0:
		return 0, nil, nil
	case data[i] == '\n':
		return i + 1, data[:i], nil
	case i+1 < len(data) && data[i+1] == '\n':
		return i + 2, data[:i], nil
	case i+1 < len(data) || atEOF:
		return i + 1, data[:i], nil
	}
	// Whether a "\n" follows the "\r" is yet to be read.
	return 0, nil, nil
}

// propertyKey returns the key of a key=value, key:value or "key value"
// line; comments and blank lines have none.
func propertyKey(line string) (key, value string, ok bool) {
	t := strings.TrimLeft(line, " \t\f")
	if t == "" || t[0] == '#' || t[0] == '!' {
		return "", "", false
	}
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '\\':
			i++ // an escaped character is part of the key
		case '=', ':', ' ', '\t', '\f':
			return t[:i], strings.TrimLeft(t[i+1:], " \t\f=:"), true
		}
	}
	return t, "", true
}

// WaitEffective blocks until a layer of the component's configuration on
// node may have changed after afterRev, or ctx ends.
func (s *Store) WaitEffective(ctx context.Context, project, component, node string, afterRev int64) {
	var heads []string
	for _, l := range chain(project, component, node) {
		heads = append(heads, l.key()+"/head")
	}
	store.Wait(ctx, s.kv, afterRev, heads...)
}
