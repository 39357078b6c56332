package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/credgw/credgw/agent"
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

// rpcErr turns a gRPC error into one a person reads: the code in words and
// the gateway's message, without "rpc error: code = … desc =" (the
// device agent's agent.Readable). Other errors are returned as they are.
func rpcErr(err error) error { return agent.Readable(err) }
