package apijson

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecodeRefusesWhatIsNotOneKnownObject(t *testing.T) {
	type body struct {
		Name string `json:"name"`
	}
	for _, tc := range []struct {
		name, in, want string
	}{
		{"valid", `{"name":"a"}`, ""},
		{"valid with trailing whitespace", "{\"name\":\"a\"}\n ", ""},
		{"empty", ``, "request body is empty; want a JSON object"},
		{"unknown field", `{"nmae":"a"}`, `unknown field "nmae"`},
		{"trailing data", `{"name":"a"} {}`, "unexpected data after the JSON value"},
		{"not JSON", `name=a`, "request body: invalid character"},
		{"too large", `{"name":"` + strings.Repeat("a", 100) + `"}`, "larger than 64 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/", strings.NewReader(tc.in))
			var b body
			err := Decode(httptest.NewRecorder(), r, &b, 64)
			if tc.want == "" {
				if err != nil || b.Name != "a" {
					t.Fatalf("Decode = %v, %+v", err, b)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestErrorHasTheSharedShape(t *testing.T) {
	w := httptest.NewRecorder()
	Error(w, http.StatusConflict, "no_session", "open a session first")
	if w.Code != http.StatusConflict || w.Header().Get("Content-Type") != "application/json" ||
		!strings.Contains(w.Body.String(), `"code": "no_session"`) || !strings.Contains(w.Body.String(), `"error": "open a session first"`) {
		t.Errorf("answer %d %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}

func TestDecodeTellsABodyTooLargeAfterTheValue(t *testing.T) {
	r := httptest.NewRequest(http.MethodPut, "/", strings.NewReader(`{"name":"a"}`+strings.Repeat(" ", 100)+"x"))
	var b struct {
		Name string `json:"name"`
	}
	if err := Decode(httptest.NewRecorder(), r, &b, 64); err == nil || !strings.Contains(err.Error(), "larger than 64 bytes") {
		t.Fatalf("Decode = %v, want too large", err)
	}
}
