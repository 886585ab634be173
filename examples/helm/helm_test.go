package helm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// helmModule is the helm the chart is checked with, built from its Go
// module: the same binary on every machine, with no download of a release
// archive.
const (
	helmModule  = "helm.sh/helm/v3/cmd/helm"
	helmVersion = "v3.22.0"
	// helmLDFlags stamp what helm's own Makefile stamps into a release:
	// its version, and the Kubernetes version it renders for when no
	// cluster says (1.37: the client-go v0.37 its go.mod requires).
	// Without them a go install'd helm says "v3.22" and renders for
	// Kubernetes 1.20, older than the chart's kubeVersion.
	helmLDFlags = "-X helm.sh/helm/v3/internal/version.version=" + helmVersion +
		" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37" +
		" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37"
)

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBinary returns the path of helm helmVersion in the repository's
// .tools (where the Makefile keeps grpcurl and staticcheck), building it
// there first when it is missing or another version. A helm that cannot be
// built fails the test: the chart is never left unchecked.
func helmBinary(t *testing.T) string {
	t.Helper()
	helmOnce.Do(func() { helmPath, helmErr = installHelm() })
	if helmErr != nil {
		t.Fatalf("helm %s: %v", helmVersion, helmErr)
	}
	return helmPath
}

func installHelm() (string, error) {
	tools, err := filepath.Abs(filepath.Join("..", "..", ".tools"))
	if err != nil {
		return "", err
	}
	bin := filepath.Join(tools, "helm")
	if v, err := helmVersionOf(bin); err == nil && v == helmVersion+" "+helmLDFlags {
		return bin, nil
	}
	if err := os.MkdirAll(tools, 0o755); err != nil {
		return "", err
	}
	// Outside this module, so that helm's own go.mod decides its
	// dependencies; it compiles for minutes.
	cmd := exec.Command("go", "install", "-ldflags="+helmLDFlags, helmModule+"@"+helmVersion)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+tools, "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %v\n%s", helmModule, helmVersion, err, out)
	}
	v, err := helmVersionOf(bin)
	if err != nil {
		return "", err
	}
	if v != helmVersion+" "+helmLDFlags {
		return "", fmt.Errorf("%s is %s after go install, want %s %s", bin, v, helmVersion, helmLDFlags)
	}
	return bin, nil
}

// helmVersionOf is the module version bin was built from and the
// -ldflags it was built with, from its build information ("v3.22.0 -X
// ..."): the binary's own version is only what -ldflags stamped.
func helmVersionOf(bin string) (string, error) {
	if _, err := os.Stat(bin); err != nil {
		return "", err
	}
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return "", fmt.Errorf("go version -m %s: %w", bin, err)
	}
	version, ldflags := "", ""
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "mod" && f[1] == "helm.sh/helm/v3":
			version = f[2]
		case len(f) >= 2 && f[0] == "build" && strings.HasPrefix(f[1], "-ldflags="):
			_, ldflags, _ = strings.Cut(strings.TrimSpace(line), "-ldflags=")
			if uq, err := strconv.Unquote(ldflags); err == nil {
				ldflags = uq
			}
		}
	}
	if version == "" {
		return "", fmt.Errorf("%s: not built from helm.sh/helm/v3", bin)
	}
	return version + " " + ldflags, nil
}

// runHelm runs helm with args and an empty home of its own (no
// repositories, no plugins, no kubeconfig: the chart renders offline).
func runHelm(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command(helmBinary(t), args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "kubeconfig"),
	)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}
