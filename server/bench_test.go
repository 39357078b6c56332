package server_test

import (
	"context"
	"testing"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// BenchmarkCompleteSession measures PKI-AUTH through the running gateway
// with a warm OCSP cache: BeginSession, the card (SoftHSM) signing the
// challenge, CompleteSession (signature check, path validation, cached
// status, SQLite writes). `make bench` reports sessions/s.
func BenchmarkCompleteSession(b *testing.B) {
	conn := portalConn(b)
	c := openCard(b, dev.Card.Name, nil)
	if _, err := login(b, conn, c); err != nil { // warms the OCSP cache
		b.Fatal(err)
	}
	client := credgwv1.NewPIVAuthClient(conn)
	ctx := context.Background()
	for b.Loop() {
		begin, err := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{
			SessionId: begin.GetSessionId(), PivAuthCertificate: c.auth.Raw, Signature: c.sign(b, begin),
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sessions/s")
}
