package authz_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCoreImportsNoProtocol keeps the decision core free of the proxy
// protocols and the store engine: adapters translate, the core decides.
func TestCoreImportsNoProtocol(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/keygate/keygate/authz").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"google.golang.org/grpc",
		"github.com/envoyproxy/go-control-plane",
		"go.etcd.io/bbolt",
		"github.com/dgraph-io/ristretto",
		"net/http",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 5 {
		t.Fatalf("go list printed too little to check: %q", out)
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("authz depends on %s", dep)
			}
		}
		// The store implements authz.Lookup; authz must not know it (its
		// leaf package for the key format is fine).
		if dep == "github.com/keygate/keygate/keystore" {
			t.Errorf("authz depends on %s", dep)
		}
	}
}
