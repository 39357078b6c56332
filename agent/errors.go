package agent

import (
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// codeWords are the gRPC codes in words a person reads.
var codeWords = map[codes.Code]string{
	codes.Canceled:           "cancelled",
	codes.InvalidArgument:    "invalid request",
	codes.DeadlineExceeded:   "timed out",
	codes.NotFound:           "not found",
	codes.AlreadyExists:      "already exists",
	codes.PermissionDenied:   "refused",
	codes.ResourceExhausted:  "limit reached",
	codes.FailedPrecondition: "not possible now",
	codes.Aborted:            "aborted",
	codes.Unimplemented:      "not supported by this gateway",
	codes.Internal:           "gateway error",
	codes.Unavailable:        "gateway unavailable",
	codes.Unauthenticated:    "not accepted",
}

// Readable is err with the gateway's status written for a person: the code
// in words and the gateway's message ("refused: wrong password, 4 attempts
// left") in place of "rpc error: code = PermissionDenied desc = …",
// wherever the status sits in err's chain. The status stays reachable:
// status.Code, status.FromError and errors.Is/As see through it. Errors
// without a status are returned as they are.
func Readable(err error) error {
	if err == nil {
		return nil
	}
	var gs interface {
		error
		GRPCStatus() *status.Status
	}
	if !errors.As(err, &gs) {
		return err
	}
	if _, ok := gs.(*readableError); ok {
		return err // done before
	}
	st := gs.GRPCStatus()
	word, ok := codeWords[st.Code()]
	if !ok {
		word = strings.ToLower(st.Code().String())
	}
	text := word
	if m := st.Message(); m != "" {
		text += ": " + m
	}
	if inner := gs.Error(); inner != "" && strings.Contains(err.Error(), inner) {
		text = strings.Replace(err.Error(), inner, text, 1)
	}
	return &readableError{text: text, err: err, st: st}
}

type readableError struct {
	text string
	err  error
	st   *status.Status
}

func (e *readableError) Error() string              { return e.text }
func (e *readableError) Unwrap() error              { return e.err }
func (e *readableError) GRPCStatus() *status.Status { return e.st }
