package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFrom(t *testing.T) {
	vcs := func(modified string) *debug.BuildInfo {
		return &debug.BuildInfo{
			GoVersion: "go1.26.0",
			Main:      debug.Module{Path: "github.com/keygate/keygate", Version: "v0.4.0"},
			Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: modified}},
		}
	}
	devel := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}
	for _, c := range []struct {
		name              string
		version, revision string
		bi                *debug.BuildInfo
		want              Info
		str               string
	}{
		{"module version and commit", "", "", vcs("false"), Info{"v0.4.0", "abc123", "go1.26.0"}, "v0.4.0 (abc123)"},
		{"uncommitted changes", "", "", vcs("true"), Info{"v0.4.0", "abc123-dirty", "go1.26.0"}, "v0.4.0 (abc123-dirty)"},
		{"stamped version wins", "v0.5.0", "", vcs("true"), Info{"v0.5.0", "abc123-dirty", "go1.26.0"}, "v0.5.0 (abc123-dirty)"},
		{"stamped revision wins", "v0.5.0", "def456", vcs("true"), Info{"v0.5.0", "def456", "go1.26.0"}, "v0.5.0 (def456)"},
		{"dev is not a stamp", "dev", "", vcs("false"), Info{"v0.4.0", "abc123", "go1.26.0"}, "v0.4.0 (abc123)"},
		{"no VCS (an image build)", "v0.5.0", "", devel, Info{"v0.5.0", "", "go1.26.0"}, "v0.5.0"},
		{"nothing known", "", "", devel, Info{"dev", "", "go1.26.0"}, "dev"},
		{"no module version", "", "", &debug.BuildInfo{GoVersion: "go1.26.0"}, Info{"dev", "", "go1.26.0"}, "dev"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := From(c.version, c.revision, c.bi)
			if got != c.want {
				t.Errorf("From(%q, %q) = %+v, want %+v", c.version, c.revision, got, c.want)
			}
			if s := got.String(); s != c.str {
				t.Errorf("String() = %q, want %q", s, c.str)
			}
		})
	}
	if got := From("", "", nil); got.Version != "dev" || got.Revision != "" || got.GoVersion == "" {
		t.Errorf("From without build info = %+v", got)
	}
}

// TestGet: a test binary has build information but no VCS stamp, so only
// the stamps given come back.
func TestGet(t *testing.T) {
	if got := Get("v9.9.9", "feed"); got.Version != "v9.9.9" || got.Revision != "feed" || got.GoVersion == "" {
		t.Errorf("Get = %+v", got)
	}
}
