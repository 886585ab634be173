package metrics

import (
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/connlimit"
)

// TestListenerMetrics reads a real capped listener: one connection held,
// one reset at the cap.
func TestListenerMetrics(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	capped, err := connlimit.New(ln, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer capped.Close()
	m := New()
	if err := m.RegisterListener("http", capped); err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		for {
			c, err := capped.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	held, err := net.Dial("tcp", capped.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	c := <-accepted
	defer c.Close()
	// The listener resets this one at once; on a busy machine that can
	// land before the dial returns, which is the refusal too.
	if refused, err := net.Dial("tcp", capped.Addr().String()); err == nil {
		defer refused.Close()
	}
	// The refusal is counted just after the reset.
	for deadline := time.Now().Add(5 * time.Second); capped.Rejected() < 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second connection was not refused")
		}
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`keygate_listener_connections{listener="http"} 1`,
		`keygate_listener_max_connections{listener="http"} 1`,
		`keygate_listener_rejected_total{listener="http"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}
}
