package metrics

import (
	"encoding/json"
	"regexp"
	"testing"
)

func TestSDTargets(t *testing.T) {
	tests := []struct {
		name  string
		nodes []SDNode
		want  string
	}{
		{name: "none", nodes: nil, want: `[]`},
		{name: "only unhealthy or unaddressed", nodes: []SDNode{
			{Name: "a", Address: "10.0.0.1:9100", Healthy: false},
			{Name: "b", Healthy: true},
		}, want: `[]`},
		{name: "sorted, filtered, empty labels left out", nodes: []SDNode{
			{Name: "esgf-index", Role: "supernode", Project: "CMIP6", Site: "llnl", Address: "index.llnl.example:7946", Healthy: true},
			{Name: "down", Role: "member", Project: "CMIP6", Site: "ipsl", Address: "down.example:7946", Healthy: false},
			{Name: "esgf-data", Role: "member", Project: "CORDEX", Address: "192.0.2.7:7946", Healthy: true},
			{Name: "no-address", Role: "member", Healthy: true},
		}, want: `[` +
			`{"targets":["192.0.2.7:7946"],"labels":{"fedkeeper_node":"esgf-data","fedkeeper_project":"CORDEX","fedkeeper_role":"member"}},` +
			`{"targets":["index.llnl.example:7946"],"labels":{"fedkeeper_node":"esgf-index","fedkeeper_project":"CMIP6","fedkeeper_role":"supernode","fedkeeper_site":"llnl"}}` +
			`]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(SDTargets(tt.nodes))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("SDTargets JSON\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

// Prometheus rejects a target group whose label names are not valid (and
// drops labels starting with __ after relabelling).
func TestSDLabelNames(t *testing.T) {
	valid := regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	for _, l := range []string{SDLabelNode, SDLabelRole, SDLabelProject, SDLabelSite} {
		if !valid.MatchString(l) || l[:2] == "__" {
			t.Errorf("label name %q not usable", l)
		}
	}
}
