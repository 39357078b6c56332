package server

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	beginSession     = "/credgw.v1.PIVAuth/BeginSession"
	createEnrollment = "/credgw.v1.Enrollment/CreateEnrollment"
)

// With every slot taken, new work waits and, at its deadline, gets
// Unavailable (Canceled if the caller gave up); the calls that finish
// work under way pass at once; a released slot admits the next call.
func TestAdmission(t *testing.T) {
	waiting := new(counter)
	a := newAdmission(1, waiting)
	hold, err := a.admit(context.Background(), beginSession)
	if err != nil {
		t.Fatal(err)
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		method string
		want   codes.Code
	}{
		{"enrollment past its deadline", expired, createEnrollment, codes.Unavailable},
		{"sign-in past its deadline", expired, beginSession, codes.Unavailable},
		{"sign-in cancelled", cancelled, beginSession, codes.Canceled},
		{"redemption", expired, "/credgw.v1.Redemption/Redeem", codes.OK},
		{"confirmation", expired, "/credgw.v1.Redemption/Confirm", codes.OK},
		{"completing a sign-in", expired, "/credgw.v1.PIVAuth/CompleteSession", codes.OK},
		{"an administrator", expired, "/credgw.v1.Admin/RevokeIdentity", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release, err := a.admit(tc.ctx, tc.method)
			if status.Code(err) != tc.want {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.want)
			}
			if err == nil {
				release()
			} else if tc.want == codes.Unavailable && !strings.Contains(err.Error(), "try again") {
				t.Fatalf("the error does not say what to do: %v", err)
			}
			if n := waiting.n.Load(); n != 0 {
				t.Fatalf("%v calls still counted as waiting", n)
			}
		})
	}
	hold()
	release, err := a.admit(expired, createEnrollment)
	if err != nil {
		t.Fatalf("a free slot was not given: %v", err)
	}
	release()
}

func TestAdmissionLimits(t *testing.T) {
	g := new(counter)
	if a := newAdmission(-1, g); a.slots != nil {
		t.Fatal("-1 limits")
	}
	if a := newAdmission(0, g); cap(a.slots) != max(1, runtime.GOMAXPROCS(0)/2) {
		t.Fatalf("default %d slots", cap(a.slots))
	}
	a := newAdmission(-1, g)
	for range 100 {
		if _, err := a.admit(context.Background(), createEnrollment); err != nil {
			t.Fatal(err)
		}
	}
}

type counter struct{ n atomic.Int64 }

func (c *counter) Inc() { c.n.Add(1) }
func (c *counter) Dec() { c.n.Add(-1) }
