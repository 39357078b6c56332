package agent

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestReadable: a gateway's refusal reads as words, wherever it sits in
// the chain, and keeps its code.
func TestReadable(t *testing.T) {
	inner := status.Error(codes.PermissionDenied, "wrong password; 4 attempts left")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{inner, "refused: wrong password; 4 attempts left"},
		{fmt.Errorf("agent: download failed after 2 resumes: %w", status.Error(codes.Unavailable, "connection cut")),
			"agent: download failed after 2 resumes: gateway unavailable: connection cut"},
		{status.Error(codes.NotFound, ""), "not found"},
	} {
		got := Readable(tc.err)
		if got.Error() != tc.want {
			t.Errorf("%q, want %q", got, tc.want)
		}
		if status.Code(got) != status.Code(tc.err) {
			t.Errorf("%q: code %v, want %v", got, status.Code(got), status.Code(tc.err))
		}
		if !errors.Is(got, tc.err) {
			t.Errorf("%q does not unwrap to the original", got)
		}
		if Readable(got) != got {
			t.Errorf("%q: made readable twice", got)
		}
	}
	plain := errors.New("agent: the package does not match its SHA-256")
	if Readable(plain) != plain || Readable(nil) != nil {
		t.Fatal("an error without a status changed")
	}
}
