package agent

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestProtocolViolationIsFinal: a gateway that breaks the download
// protocol (a chunk that does not continue the package, Done before the
// end, a package larger than any credential package) is not a cut
// connection: the agent gives up after one open instead of sending the
// secret, password and CSRs again MaxResumes times, and says why.
func TestProtocolViolationIsFinal(t *testing.T) {
	raw := testPackage()
	sum := sha256.Sum256(raw)
	accepted := &credgwv1.RedeemResponse{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{RedemptionId: "r1", TotalBytes: int64(len(raw))}}}
	for _, tc := range []struct {
		name string
		msgs []*credgwv1.RedeemResponse
		want string
	}{
		{"a chunk at the wrong offset", []*credgwv1.RedeemResponse{accepted,
			{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{Offset: 7, Data: raw}}}}, "does not continue"},
		{"Done before the end", []*credgwv1.RedeemResponse{accepted,
			{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{Offset: 0, Data: raw[:10]}}},
			{Event: &credgwv1.RedeemResponse_Done{Done: &credgwv1.Done{Sha256: sum[:]}}}}, "Done before"},
		{"a package beyond the bound", []*credgwv1.RedeemResponse{
			{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{RedemptionId: "r1", TotalBytes: maxPackageBytes + 1}}}}, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opens := 0
			open := func(context.Context, []*credgwv1.CertificateRequest, int64, string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
				opens++
				return &fakeStream{msgs: append([]*credgwv1.RedeemResponse(nil), tc.msgs...)}, nil
			}
			confirm := func(context.Context, string, []byte) (string, error) { return "set", nil }
			o := Options{Events: func(Event) {}, MaxResumes: 5, OutDir: t.TempDir(), Install: func(context.Context, *Package) error { return nil }}
			_, err := fetchAndInstall(context.Background(), o, open, confirm)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "resumes") {
				t.Fatalf("err %v, want one saying %q and no resumes", err, tc.want)
			}
			if opens != 1 {
				t.Fatalf("the download was opened %d times, want 1", opens)
			}
		})
	}
}

// TestBackoffBounds: the gateway's RetryInfo is taken between 1 s and
// 15 s (a hostile or broken gateway cannot make agents spin), with up to a
// fifth added at random, so that agents that waited together do not all
// come back in the same instant.
func TestBackoffBounds(t *testing.T) {
	withDelay := func(d time.Duration) *status.Status {
		st, _ := status.New(codes.Unavailable, "being issued").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		return st
	}
	seen := map[time.Duration]bool{}
	for range 50 {
		for _, tc := range []struct {
			st       *status.Status
			lo, hi   time.Duration
			whatFrom string
		}{
			{withDelay(time.Nanosecond), time.Second, 1200 * time.Millisecond, "1 ns"},
			{withDelay(2 * time.Second), 2 * time.Second, 2400 * time.Millisecond, "2 s"},
			{withDelay(time.Hour), 15 * time.Second, 18 * time.Second, "an hour"},
			{status.New(codes.Unavailable, "x"), time.Second, 1200 * time.Millisecond, "no RetryInfo, first wait"},
		} {
			d := backoff(tc.st, 0)
			if d < tc.lo || d > tc.hi {
				t.Fatalf("backoff for %s = %v, want within [%v, %v]", tc.whatFrom, d, tc.lo, tc.hi)
			}
			if tc.whatFrom == "2 s" {
				seen[d] = true
			}
		}
	}
	if len(seen) < 2 {
		t.Fatalf("50 backoffs for the same RetryInfo were all %v: no jitter", seen)
	}
}

// TestRateLimitedRedeemIsRetried: a Redeem refused by the gateway's rate
// limit for the device's address (ResourceExhausted with a RetryInfo:
// nothing was done, the code is still good) is asked again after the
// delay, within MaxWait, as an Unavailable one is; a locked code
// (ResourceExhausted without a RetryInfo) stays final.
func TestRateLimitedRedeemIsRetried(t *testing.T) {
	raw := testPackage()
	sum := sha256.Sum256(raw)
	limited, _ := status.New(codes.ResourceExhausted, "failed redemptions from this address: too many requests; retry in 1s").
		WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Nanosecond)})
	for _, tc := range []struct {
		name      string
		first     error
		maxWait   time.Duration
		wantOpens int
		wantErr   bool
	}{
		{"rate limited", limited.Err(), time.Minute, 2, false},
		{"locked", status.Error(codes.ResourceExhausted, "locked: too many wrong passwords"), time.Minute, 1, true},
		// No waiting asked for: the refusal is the answer (before, six
		// quick "resumes" sent the secret and password again at once).
		{"rate limited, no waits", limited.Err(), -1, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opens := 0
			open := func(context.Context, []*credgwv1.CertificateRequest, int64, string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
				if opens++; opens == 1 {
					return nil, tc.first
				}
				return &fakeStream{msgs: []*credgwv1.RedeemResponse{
					{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{RedemptionId: "r1", TotalBytes: int64(len(raw))}}},
					{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{Offset: 0, Data: raw}}},
					{Event: &credgwv1.RedeemResponse_Done{Done: &credgwv1.Done{Sha256: sum[:]}}},
				}}, nil
			}
			confirm := func(context.Context, string, []byte) (string, error) { return "set", nil }
			o := Options{Events: func(Event) {}, MaxResumes: 5, MaxWait: tc.maxWait, OutDir: t.TempDir(), Install: func(context.Context, *Package) error { return nil }}
			_, err := fetchAndInstall(context.Background(), o, open, confirm)
			if (err != nil) != tc.wantErr || opens != tc.wantOpens {
				t.Fatalf("err %v after %d opens; want error %v after %d", err, opens, tc.wantErr, tc.wantOpens)
			}
		})
	}
}
