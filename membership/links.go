package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fedkeeper/fedkeeper/store"
)

// prefixLinks holds, per supernode, what it sees of its links to the
// other supernodes: links/<from> is a LinkView.
const prefixLinks = store.Root + "links/"

// Link is one supernode's view of its link to another, like the links of
// ESGF's node map.
type Link struct {
	From string `json:"from"`
	To   string `json:"to"`
	Up   bool   `json:"up"`
	// RTTMillis is the round trip of the last successful check.
	RTTMillis float64   `json:"rtt_ms"`
	Since     time.Time `json:"since"`
}

// PutLinks records supernode from's view of its links.
func (s *Service) PutLinks(ctx context.Context, from string, links []Link) error {
	if _, err := s.kv.Put(ctx, prefixLinks+from, store.MustJSON(links)); err != nil {
		return fmt.Errorf("record links of %s: %w", from, err)
	}
	return nil
}

// Links returns every supernode's recorded links, sorted.
func (s *Service) Links(ctx context.Context) ([]Link, error) {
	resp, err := s.kv.Get(ctx, prefixLinks, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read links: %w", err)
	}
	out := []Link{}
	for _, kv := range resp.Kvs {
		var ls []Link
		if err := json.Unmarshal(kv.Value, &ls); err != nil {
			return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
		}
		out = append(out, ls...)
	}
	slices.SortFunc(out, func(a, b Link) int {
		return strings.Compare(a.From+"\x00"+a.To, b.From+"\x00"+b.To)
	})
	return out, nil
}
