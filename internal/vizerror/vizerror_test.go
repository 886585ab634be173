package vizerror

import (
	"errors"
	"fmt"
	"testing"
)

func TestVisibleApartFromCause(t *testing.T) {
	errBad := errors.New("invalid")
	cause := fmt.Errorf("%w: tier %q: want one of %q", errBad, "gold", []string{"standard"})
	err := fmt.Errorf("create key: %w", WrapWithMessage(cause, `tier "gold": want one of ["standard"]`))

	if got, want := err.Error(), `create key: invalid: tier "gold": want one of ["standard"]`; got != want {
		t.Errorf("Error() = %q, want the cause's text %q", got, want)
	}
	if !errors.Is(err, errBad) {
		t.Error("the cause's sentinel is lost")
	}
	msg, ok := As(err)
	if !ok || msg != `tier "gold": want one of ["standard"]` {
		t.Errorf("As = %q, %v", msg, ok)
	}
	// The outermost message wins: a caller may say more, or less.
	outer := WrapWithMessage(fmt.Errorf("import: %w", err), "the import was refused")
	if msg, _ := As(outer); msg != "the import was refused" {
		t.Errorf("As(outer) = %q", msg)
	}
	if msg, ok := As(cause); ok || msg != "" {
		t.Errorf("As(plain error) = %q, %v", msg, ok)
	}
	if _, ok := As(nil); ok {
		t.Error("As(nil) found a message")
	}
}
