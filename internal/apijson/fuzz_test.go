package apijson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/fedkeeper/fedkeeper/api"
	"github.com/fedkeeper/fedkeeper/configsync"
	"github.com/fedkeeper/fedkeeper/coord"
	"github.com/fedkeeper/fedkeeper/internal/apijson"
	"github.com/fedkeeper/fedkeeper/membership"
	"github.com/fedkeeper/fedkeeper/pki"
	"github.com/fedkeeper/fedkeeper/quorum"
	"github.com/fedkeeper/fedkeeper/services"
)

// request is a body the federation API or an agent's local API takes,
// with the checks its handler makes before anything reaches the store.
type request struct {
	name     string
	new      func() any
	validate func(v any) error
}

func lease(s string) error {
	id, err := strconv.ParseInt(s, 16, 64)
	if err == nil && id <= 0 {
		err = errors.New("not positive")
	}
	return err
}

var requests = []request{
	{"join", func() any { return new(membership.JoinInput) }, func(v any) error {
		in := v.(*membership.JoinInput)
		return errors.Join(membership.ValidateName(in.Name), in.Profile.Validate(), func() error {
			_, err := pki.ParseCSR([]byte(in.CSR), in.Name)
			return err
		}())
	}},
	{"profile", func() any { return new(membership.Profile) }, func(v any) error { return v.(*membership.Profile).Validate() }},
	{"services", func() any { return new(api.ServiceSet) }, func(v any) error {
		var regs []services.Registration
		for _, r := range v.(*api.ServiceSet).Services {
			regs = append(regs, r.WithDefaults("CMIP6"))
		}
		return services.ValidateSet(regs)
	}},
	{"local service", func() any { return new(services.Registration) }, func(v any) error {
		return v.(*services.Registration).WithDefaults("CMIP6").Validate()
	}},
	{"publish", func() any { return new(api.PublishRequest) }, func(v any) error {
		in := v.(*api.PublishRequest)
		errs := []error{configsync.Layer{Project: "CMIP6", Component: in.Component, Node: in.Node}.Validate()}
		for _, f := range in.Files {
			errs = append(errs, configsync.ValidatePath(f.Path))
		}
		return errors.Join(errs...)
	}},
	{"rollback", func() any { return new(api.RollbackRequest) }, func(v any) error {
		in := v.(*api.RollbackRequest)
		return configsync.Layer{Project: "CMIP6", Component: in.Component, Node: in.Node}.Validate()
	}},
	{"config report", func() any { return new(api.ReportRequest) }, func(any) error { return nil }},
	{"lease", func() any { return new(api.LeaseRequest) }, func(v any) error { return coord.ValidateTTL(v.(*api.LeaseRequest).TTL) }},
	{"lease body", func() any { return new(api.LeaseBody) }, func(v any) error { return lease(v.(*api.LeaseBody).Lease) }},
	{"stand", func() any { return new(api.StandRequest) }, func(v any) error { return lease(v.(*api.StandRequest).Lease) }},
	{"ask", func() any { return new(api.AskRequest) }, func(v any) error {
		if n := v.(*api.AskRequest).Node; n != "" {
			return membership.ValidateName(n)
		}
		return nil
	}},
	{"enqueue", func() any { return new(api.EnqueueRequest) }, func(v any) error { return lease(v.(*api.EnqueueRequest).Lease) }},
	{"confirm", func() any { return new(api.ConfirmRequest) }, func(v any) error { return membership.ValidateName(v.(*api.ConfirmRequest).Node) }},
	{"token", func() any { return new(api.TokenRequest) }, func(v any) error {
		in := v.(*api.TokenRequest)
		_, err := time.ParseDuration(in.TTL)
		if in.Project != "" {
			err = errors.Join(err, membership.ValidateProject(in.Project))
		}
		return err
	}},
	{"add supernode", func() any { return new(api.AddSupernodeRequest) }, func(v any) error {
		in := v.(*api.AddSupernodeRequest)
		_, err := url.Parse(in.PeerURL)
		return errors.Join(membership.ValidateName(in.Name), err)
	}},
	{"supernode join", func() any { return new(quorum.JoinRequest) }, func(v any) error {
		in := v.(*quorum.JoinRequest)
		_, err1 := pki.ParseCSR([]byte(in.APICSR), in.Name)
		_, err2 := pki.ParseCSR([]byte(in.StoreCSR), in.Name)
		return errors.Join(membership.ValidateName(in.Name), err1, err2)
	}},
	{"put kv", func() any { return new(api.PutKVRequest) }, func(any) error { return nil }},
}

// FuzzUnmarshal decodes bodies into every request type the APIs take.
// Unmarshal must accept exactly one JSON value and decode it as the
// standard decoder does; the handler's checks must not panic on it; what
// decodes must encode into a body that decodes again to the same value
// and checks out the same; and Decode must refuse any body over its limit.
func FuzzUnmarshal(f *testing.F) {
	for i, body := range []string{
		`{"name":"node1","profile":{"project":"CMIP6","site":"DKRZ","address":"192.0.2.10:7444","lat":53.5,"lon":9.9,"endpoints":{"IndexService":"https://x/"}},"csr":"","token":"fkt_x"}`,
		`{"project":"CMIP6","site":"IPSL","address":"[2001:db8::1]:443"}`,
		`{"services":[{"name":"web","port":8080,"tags":["v2"],"checks":[{"name":"up","type":"http","url":"http://127.0.0.1:8080/"}]},{"id":"w2","name":"web","port":8081,"status":"passing","output":"ok"}]}`,
		`{"name":"thredds","address":"esgf.example.org","port":443,"protocol":"https","path":"/thredds"}`,
		`{"component":"tomcat","node":"node1","files":[{"path":"conf/a.properties","content":"YT0x"}],"message":"m","expect_seq":0}`,
		`{"component":"tomcat","seq":3}`,
		`{"version":"p1.c2","error":"reload failed","failed":"p1.c3"}`,
		`{"ttl":10000000000}`,
		`{"lease":"1a2b"}`,
		`{"lease":"1a2b","rank":10,"state":"standby"}`,
		`{"node":"node2"}`,
		`{"lease":"ff","limit":2}`,
		`{"node":"node1"}`,
		`{"project":"CMIP6","uses":5,"ttl":"24h"}`,
		`{"name":"sn2","peer_url":"https://192.0.2.2:7444","standby":true}`,
		`{"name":"sn2","token":"t","advertise":"sn2.example.org:7443","api_csr":"","store_csr":""}`,
		`{"value":"v","prev_revision":0}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Add(uint8(0), []byte(`{"name":"a"} {}`))
	f.Add(uint8(1), []byte(`{"project":"a","project":"b"}`))
	f.Add(uint8(2), []byte("{\"services\":null}\n\t "))
	f.Add(uint8(3), []byte(`{"name":"a","Name":"b"}`))
	f.Add(uint8(4), []byte(`{"files":[{"path":"a","content":"!!"}]}`))
	f.Add(uint8(7), []byte(`{"ttl":1e9}`))
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		req := requests[int(kind)%len(requests)]
		v := req.new()
		err := apijson.Unmarshal(bytes.NewReader(body), v)

		r := httptest.NewRequest(http.MethodPut, "/", bytes.NewReader(body))
		if derr := apijson.Decode(httptest.NewRecorder(), r, req.new(), int64(len(body))); (derr == nil) != (err == nil) {
			t.Fatalf("%s: Decode within its limit says %v, Unmarshal %v", req.name, derr, err)
		}
		if len(body) > 0 {
			r := httptest.NewRequest(http.MethodPut, "/", bytes.NewReader(body))
			if derr := apijson.Decode(httptest.NewRecorder(), r, req.new(), int64(len(body)-1)); derr == nil {
				t.Fatalf("%s: Decode took a %d-byte body with a limit of %d", req.name, len(body), len(body)-1)
			}
		}
		if err != nil {
			return
		}
		if !json.Valid(body) {
			t.Fatalf("%s: Unmarshal accepted what is not one JSON value: %q", req.name, body)
		}
		std := req.new()
		if err := json.Unmarshal(body, std); err != nil || !reflect.DeepEqual(v, std) {
			t.Fatalf("%s: the standard decoder says %v, %+v; Unmarshal %+v", req.name, err, std, v)
		}
		valid := req.validate(v) == nil

		again, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: a decoded body does not encode: %v", req.name, err)
		}
		v2 := req.new()
		if err := apijson.Unmarshal(bytes.NewReader(again), v2); err != nil {
			t.Fatalf("%s: the encoding of a decoded body does not decode: %v\n%s", req.name, err, again)
		}
		if third, _ := json.Marshal(v2); !bytes.Equal(again, third) {
			t.Fatalf("%s: round trip changed the body:\n%s\n%s", req.name, again, third)
		}
		if valid2 := req.validate(v2) == nil; valid2 != valid {
			t.Fatalf("%s: valid %v before a round trip, %v after:\n%s", req.name, valid, valid2, again)
		}
	})
}
