package metrics

import (
	"runtime/debug"
	"testing"
)

func TestBuildInfoLabels(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Version: "v0.4.0"},
		Settings:  []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}},
	}
	for _, c := range []struct {
		version string
		bi      *debug.BuildInfo
		want    [3]string
	}{
		// A version stamped at build time wins over the module's.
		{"v0.5.0", bi, [3]string{"v0.5.0", "abc123", "go1.26.0"}},
		{"dev", bi, [3]string{"v0.4.0", "abc123", "go1.26.0"}},
		{"", bi, [3]string{"v0.4.0", "abc123", "go1.26.0"}},
		{"dev", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}, [3]string{"dev", "unknown", "go1.26.0"}},
		{"", &debug.BuildInfo{GoVersion: "go1.26.0"}, [3]string{"unknown", "unknown", "go1.26.0"}},
	} {
		v, rev, gover := buildInfo(c.version, c.bi)
		if got := [3]string{v, rev, gover}; got != c.want {
			t.Errorf("buildInfo(%q, %+v) = %v, want %v", c.version, c.bi.Main, got, c.want)
		}
	}
	if v, rev, gover := buildInfo("dev", nil); v != "dev" || rev != "unknown" || gover == "" {
		t.Errorf("buildInfo without build info = %q %q %q", v, rev, gover)
	}
}
