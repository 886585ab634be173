// Package buildinfo says which build is running: `keygate version` and the
// keygate_build_info metric read it here, so that they never disagree.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Info identifies a build.
type Info struct {
	// Version is the one stamped with -ldflags -X, else the module's (a
	// tag, or a pseudo-version that go build derives from the VCS), else
	// "dev".
	Version string
	// Revision is the VCS commit, with "-dirty" when the tree had
	// uncommitted changes; empty when unknown (a build outside a checkout,
	// such as the Docker image's, whose context leaves .git out, unless
	// stamped).
	Revision  string
	GoVersion string
}

// Get reads the running binary's build information. version and revision
// are main's -ldflags -X stamps: they win when set, because a release or
// an image knows its version better than a build without its .git does.
func Get(version, revision string) Info {
	bi, _ := debug.ReadBuildInfo()
	return From(version, revision, bi)
}

// From is Get with the build information given; bi may be nil (a binary
// built without module support).
func From(version, revision string, bi *debug.BuildInfo) Info {
	i := Info{Version: version, Revision: revision, GoVersion: runtime.Version()}
	// "dev" was main.version's default before the module version was read:
	// a build still stamping it says nothing more than an unstamped one.
	if i.Version == "dev" {
		i.Version = ""
	}
	if bi != nil {
		if mv := bi.Main.Version; i.Version == "" && mv != "" && mv != "(devel)" {
			i.Version = mv
		}
		if i.Revision == "" {
			var modified bool
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					i.Revision = s.Value
				case "vcs.modified":
					modified = s.Value == "true"
				}
			}
			if i.Revision != "" && modified {
				i.Revision += "-dirty"
			}
		}
		if bi.GoVersion != "" {
			i.GoVersion = bi.GoVersion
		}
	}
	if i.Version == "" {
		i.Version = "dev"
	}
	return i
}

// String is what `keygate version` prints after the name: the version, and
// the commit when known.
func (i Info) String() string {
	if i.Revision == "" {
		return i.Version
	}
	return i.Version + " (" + i.Revision + ")"
}
