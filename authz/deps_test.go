package authz_test

import (
	"os/exec"
	"strings"
	"testing"
)

// coreAllowed says whether the decision core may depend on a package: the
// standard library but its HTTP stack (the core decides; adapters speak
// HTTP and gRPC), the core's own packages, and the key format's leaf
// package. Anything else (gRPC, go-control-plane, bbolt, ristretto, the
// store, a new module) has to be argued for here first.
func coreAllowed(pkg string, std bool) bool {
	if std {
		return pkg != "net/http" && !strings.HasPrefix(pkg, "net/http/")
	}
	return pkg == "github.com/keygate/keygate/authz" ||
		strings.HasPrefix(pkg, "github.com/keygate/keygate/authz/") ||
		pkg == "github.com/keygate/keygate/keystore/apikey"
}

// TestCoreImportsNoProtocol keeps the decision core free of the proxy
// protocols and the store engine, by listing what it may depend on rather
// than what it may not, so that a new dependency fails here until it is
// allowed on purpose. authz/ratelimit/redislimit is not checked: it is an
// adapter to Redis, outside the core, and the core cannot depend on it
// without depending on its Redis client, which this list refuses.
func TestCoreImportsNoProtocol(t *testing.T) {
	for _, pkg := range []string{"github.com/keygate/keygate/authz", "github.com/keygate/keygate/authz/ratelimit"} {
		t.Run(pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}}", pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(lines) < 5 {
				t.Fatalf("go list printed too little to check: %q", out)
			}
			for _, l := range lines {
				dep, std, ok := strings.Cut(l, " ")
				if !ok || (std != "true" && std != "false") {
					t.Fatalf("go list printed %q, want \"<import path> <standard>\"", l)
				}
				if !coreAllowed(dep, std == "true") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		})
	}
}
