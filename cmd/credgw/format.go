package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// timeLayout is how the command line prints a time: date, time and zone.
const timeLayout = "2006-01-02 15:04:05 MST"

// fmtTime prints a time with its date and zone, in the local zone; the
// zero time is "-".
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeLayout)
}

// fmtTS is fmtTime for a protobuf timestamp (nil or unset: "-").
func fmtTS(ts *timestamppb.Timestamp) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return "-"
	}
	return fmtTime(ts.AsTime())
}

// fmtSerial prints a certificate serial as `openssl x509 -serial` does:
// uppercase hex, whole bytes, no colons ("0A1B2C"). The gateway keeps
// serials in lowercase hex without leading zeros.
func fmtSerial(s string) string {
	s = strings.ToUpper(strings.ReplaceAll(s, ":", ""))
	if s == "" {
		return "-"
	}
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// parseSerial reads a serial given on the command line: hex, in any case,
// with or without colons, a leading "0x" or the "serial=" of
// `openssl x509 -serial`. It returns the form the gateway keeps.
func parseSerial(s string) (string, error) {
	v := strings.TrimSpace(s)
	v = strings.TrimPrefix(strings.TrimPrefix(v, "serial="), "SERIAL=")
	if len(v) > 2 && (v[:2] == "0x" || v[:2] == "0X") {
		v = v[2:]
	}
	v = strings.ToLower(strings.ReplaceAll(v, ":", ""))
	if v == "" || strings.Trim(v, "0123456789abcdef") != "" || len(v) > 64 {
		return "", fmt.Errorf("--serial %q: want the serial in hex, as `openssl x509 -noout -serial` prints it (colons and case do not matter)", s)
	}
	v = strings.TrimLeft(v, "0")
	if v == "" {
		v = "0"
	}
	return v, nil
}

// plural says "1 certificate", "2 certificates".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

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
	codes.Unauthenticated:    "not signed in",
}

// rpcErr turns a gRPC error into one a person reads: the code in words and
// the gateway's message, without "rpc error: code = … desc =". Other
// errors are returned as they are.
func rpcErr(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	word, ok := codeWords[st.Code()]
	if !ok {
		word = strings.ToLower(st.Code().String())
	}
	msg := st.Message()
	if msg == "" {
		return errors.New(word)
	}
	return &readableErr{msg: word + ": " + msg, err: err}
}

// readableErr keeps the status for errors.Is/As and status.FromError
// through Unwrap while printing the readable message.
type readableErr struct {
	msg string
	err error
}

func (e *readableErr) Error() string { return e.msg }
func (e *readableErr) Unwrap() error { return e.err }
