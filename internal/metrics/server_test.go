package metrics

import (
	"net/http"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/buildinfo"
)

// TestBuildInfoLabels: the labels are buildinfo's, with an unknown
// revision spelled out rather than left empty.
func TestBuildInfoLabels(t *testing.T) {
	for _, c := range []struct {
		bi   buildinfo.Info
		want string
	}{
		{buildinfo.Info{Version: "v0.4.0", Revision: "abc123-dirty", GoVersion: "go1.26.0"},
			`keygate_build_info{go_version="go1.26.0",revision="abc123-dirty",version="v0.4.0"} 1`},
		{buildinfo.Info{Version: "dev", GoVersion: "go1.26.0"},
			`keygate_build_info{go_version="go1.26.0",revision="unknown",version="dev"} 1`},
	} {
		m := New()
		if err := m.RegisterBuildInfo(c.bi); err != nil {
			t.Fatal(err)
		}
		code, body := scrape(t, m.Endpoint(nil), "GET", "/metrics", "")
		if code != http.StatusOK || !strings.Contains(body, c.want) {
			t.Errorf("%+v: scrape %d lacks %s", c.bi, code, c.want)
		}
	}
}
