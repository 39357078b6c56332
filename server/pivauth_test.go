package server_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const cryptoSHA256 = crypto.SHA256

// login runs PKI-AUTH for c over conn.
func login(t testing.TB, conn *grpc.ClientConn, c *card) (*credgwv1.CompleteSessionResponse, error) {
	t.Helper()
	client := credgwv1.NewPIVAuthClient(conn)
	b, err := client.BeginSession(context.Background(), &credgwv1.BeginSessionRequest{})
	if err != nil {
		t.Fatalf("BeginSession: %v", err)
	}
	resp, err := client.CompleteSession(context.Background(), &credgwv1.CompleteSessionRequest{
		SessionId: b.GetSessionId(), PivAuthCertificate: c.auth.Raw, Signature: c.sign(t, b),
	})
	if err == nil {
		rememberSecret([]byte(resp.GetSessionToken()))
	}
	return resp, err
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %v", err, code)
	}
	if code != codes.OK && status.Convert(err).Message() == "" {
		t.Fatal("error without a message")
	}
}

func TestPKIAuthGoodCards(t *testing.T) {
	conn := portalConn(t)
	for _, tc := range []struct {
		name string
		c    func() *card
	}{
		{"dev card p256", func() *card { return openCard(t, dev.Card.Name, nil) }},
		{"rsa2048", func() *card { return newCard(t, hsmsim.CardSpec{Key: pkcs11.RSA2048, Email: "rsa@example.com"}) }},
		{"p384 without email in 9A", func() *card { return newCard(t, hsmsim.CardSpec{Key: pkcs11.ECP384}) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c()
			start := now()
			resp, err := login(t, conn, c)
			if err != nil {
				t.Fatal(err)
			}
			id := resp.GetIdentity()
			if len(resp.GetSessionToken()) != 43 { // 256 bits, base64url
				t.Errorf("token of %d characters", len(resp.GetSessionToken()))
			}
			if ttl := resp.GetExpiresAt().AsTime().Sub(start); ttl < 19*time.Minute || ttl > 21*time.Minute {
				t.Errorf("session valid %v, want 20m", ttl)
			}
			if id.GetCardUuid() == "" || len(id.GetFascn()) != 25 || len(id.GetPersonId()) != 14 || !strings.Contains(id.GetSubject(), "CN=") {
				t.Errorf("identity %+v", id)
			}
			if c.info != nil && (id.GetCardUuid() != c.info.UUID || id.GetEmail() != c.info.Email) {
				t.Errorf("identity %+v for card %+v", id, c.info)
			}
		})
	}
}

// TestEmailFromDigitalSignatureCertificate: a card whose 9A has no email
// sends its 9C certificate, which gives the email of record; another card's
// 9C (another subject) is refused.
func TestEmailFromDigitalSignatureCertificate(t *testing.T) {
	client := credgwv1.NewPIVAuthClient(portalConn(t))
	ctx := context.Background()
	c := newCard(t, hsmsim.CardSpec{Email: "nine-c@example.com", EmailOnlyInSignature: true})
	other := newCard(t, hsmsim.CardSpec{Email: "other@example.com"})
	nineC := func(c *card) []byte {
		ds, err := c.tok.Certificate(ctx, pkcs11.PIVSignature.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		return ds.Raw
	}
	complete := func(ds []byte) (*credgwv1.CompleteSessionResponse, error) {
		b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
		resp, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{
			SessionId: b.GetSessionId(), PivAuthCertificate: c.auth.Raw, Signature: c.sign(t, b), DigitalSignatureCertificate: ds,
		})
		if err == nil {
			rememberSecret([]byte(resp.GetSessionToken()))
		}
		return resp, err
	}
	resp, err := complete(nineC(c))
	if err != nil {
		t.Fatal(err)
	}
	if id := resp.GetIdentity(); id.GetEmail() != "nine-c@example.com" || id.GetEmailSource() != "digital-signature" {
		t.Fatalf("identity %+v", id)
	}
	if resp, err := complete(nil); err != nil || resp.GetIdentity().GetEmail() != "" {
		t.Fatalf("without 9C: %+v, %v", resp.GetIdentity(), err)
	}
	_, err = complete(nineC(other))
	wantCode(t, err, codes.InvalidArgument)
	_, err = complete([]byte("not a certificate"))
	wantCode(t, err, codes.InvalidArgument)
}

// TestPKIAuthRefusals: every way a card or request can be bad, with its code.
func TestPKIAuthRefusals(t *testing.T) {
	conn := portalConn(t)
	client := credgwv1.NewPIVAuthClient(conn)
	ctx := context.Background()
	good := openCard(t, dev.Card.Name, nil)
	variant := func(v hsmsim.Variant) func(t *testing.T) error {
		return func(t *testing.T) error {
			_, err := login(t, conn, newCard(t, hsmsim.CardSpec{Variant: v}))
			return err
		}
	}
	tests := []struct {
		name     string
		ocspDown bool
		crlDown  bool
		run      func(t *testing.T) error
		want     codes.Code
	}{
		{"revoked (OCSP)", false, false, variant(hsmsim.Revoked), codes.PermissionDenied},
		{"revoked (CRL while OCSP is down)", true, false, variant(hsmsim.Revoked), codes.PermissionDenied},
		{"good card, OCSP down: CRL says good", true, false, variant(hsmsim.Good), codes.OK},
		{"OCSP and CRL both down: fail closed", true, true, func(t *testing.T) error {
			// A day later every cached CRL is past its nextUpdate.
			clockOffset.Add(int64(25 * time.Hour))
			defer clockOffset.Add(-int64(25 * time.Hour))
			return variant(hsmsim.Good)(t)
		}, codes.Unavailable},
		{"expired", false, false, variant(hsmsim.Expired), codes.PermissionDenied},
		{"not yet valid", false, false, variant(hsmsim.NotYetValid), codes.PermissionDenied},
		{"wrong policy", false, false, variant(hsmsim.WrongPolicy), codes.PermissionDenied},
		{"untrusted issuer", false, false, variant(hsmsim.Untrusted), codes.PermissionDenied},
		{"signature by another key", false, false, variant(hsmsim.WrongKey), codes.Unauthenticated},
		{"EKU serverAuth only", false, false, variant(hsmsim.EKUServerAuth), codes.PermissionDenied},
		{"EKU id-PIV-cardAuth only", false, false, variant(hsmsim.EKUCardAuth), codes.PermissionDenied},
		{"keyCertSign on a leaf", false, false, variant(hsmsim.KUCertSign), codes.PermissionDenied},
		{"cRLSign on a leaf", false, false, variant(hsmsim.KUCRLSign), codes.PermissionDenied},
		{"challenge replayed", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			req := &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: good.auth.Raw, Signature: good.sign(t, b)}
			first, err := client.CompleteSession(ctx, req)
			if err != nil {
				t.Fatalf("first use: %v", err)
			}
			rememberSecret([]byte(first.GetSessionToken()))
			_, err = client.CompleteSession(ctx, req)
			return err
		}, codes.FailedPrecondition},
		{"challenge expired", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			sig := good.sign(t, b)
			clockOffset.Add(int64(3 * time.Minute))
			defer clockOffset.Add(-int64(3 * time.Minute))
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: good.auth.Raw, Signature: sig})
			return err
		}, codes.FailedPrecondition},
		{"unknown session", false, false, func(t *testing.T) error {
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: "no-such-session", PivAuthCertificate: good.auth.Raw, Signature: []byte{1, 2, 3}})
			return err
		}, codes.NotFound},
		{"garbage DER", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: []byte("\x30\x82garbage"), Signature: good.sign(t, b)})
			return err
		}, codes.InvalidArgument},
		{"garbage DER spends the challenge", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: []byte("\x30\x82garbage"), Signature: good.sign(t, b)})
			wantCode(t, err, codes.InvalidArgument)
			// Single use whatever follows: the good certificate cannot
			// take the challenge that was spent.
			_, err = client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: good.auth.Raw, Signature: good.sign(t, b)})
			return err
		}, codes.FailedPrecondition},
		{"garbage intermediate", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: good.auth.Raw,
				Intermediates: [][]byte{{0x30, 0x00}}, Signature: good.sign(t, b)})
			return err
		}, codes.InvalidArgument},
		{"empty signature", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: good.auth.Raw})
			return err
		}, codes.InvalidArgument},
		{"signature over another challenge", false, false, func(t *testing.T) error {
			b1, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			b2, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b2.GetSessionId(), PivAuthCertificate: good.auth.Raw, Signature: good.sign(t, b1)})
			return err
		}, codes.Unauthenticated},
		{"ECDSA key claiming an RSA signature", false, false, func(t *testing.T) error {
			b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: good.auth.Raw,
				Signature: good.sign(t, b), SignatureAlgorithm: credgwv1.SignatureAlgorithm_SIGNATURE_ALGORITHM_RSA_PSS_SHA256})
			return err
		}, codes.Unauthenticated},
		{"oversized message", false, false, func(t *testing.T) error {
			_, err := client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: "x", PivAuthCertificate: make([]byte, 2<<20), Signature: []byte{1}})
			return err
		}, codes.ResourceExhausted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			setOutage(t, tc.ocspDown, tc.crlDown)
			wantCode(t, tc.run(t), tc.want)
		})
	}
}

func TestAuthorization(t *testing.T) {
	ctx := context.Background()
	good := openCard(t, dev.Card.Name, nil)
	revoked := newCard(t, hsmsim.CardSpec{Variant: hsmsim.Revoked})
	admin := keyPair(t, dev.AdminCert, dev.AdminKey)
	tests := []struct {
		name string
		conn func() *grpc.ClientConn
		call func(*grpc.ClientConn) error
		want codes.Code
	}{
		{"PIVAuth without client certificate", func() *grpc.ClientConn { return dial(t) }, beginSession, codes.Unauthenticated},
		{"PIVAuth as portal", func() *grpc.ClientConn { return portalConn(t) }, beginSession, codes.OK},
		{"PIVAuth with the card as TLS client", func() *grpc.ClientConn { return dial(t, good.tlsCert()) }, beginSession, codes.OK},
		{"PIVAuth with a revoked card as TLS client", func() *grpc.ClientConn { return dial(t, revoked.tlsCert()) }, beginSession, codes.PermissionDenied},
		{"PIVAuth as admin", func() *grpc.ClientConn { return dial(t, admin) }, beginSession, codes.PermissionDenied},
		{"Admin as portal", func() *grpc.ClientConn { return portalConn(t) }, forceCRL, codes.PermissionDenied},
		{"Admin with a card", func() *grpc.ClientConn { return dial(t, good.tlsCert()) }, forceCRL, codes.PermissionDenied},
		{"Admin as admin", func() *grpc.ClientConn { return dial(t, admin) }, forceCRL, codes.OK},
		{"Renewal with the admin certificate", func() *grpc.ClientConn { return dial(t, admin) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewRenewalClient(c).Confirm(ctx, &credgwv1.ConfirmRequest{})
			return err
		}, codes.PermissionDenied},
		{"Rekey with a card and a bad CSR", func() *grpc.ClientConn { return dial(t, good.tlsCert()) }, func(c *grpc.ClientConn) error {
			// Who calls is checked before what the request carries.
			s, err := credgwv1.NewRenewalClient(c).Rekey(ctx, &credgwv1.RekeyRequest{Csrs: []*credgwv1.CertificateRequest{
				{Profile: credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, CsrDer: []byte("not a CSR")}}})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}, codes.PermissionDenied},
		{"Renewal without a certificate", func() *grpc.ClientConn { return dial(t) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewRenewalClient(c).Confirm(ctx, &credgwv1.ConfirmRequest{})
			return err
		}, codes.Unauthenticated},
		{"Renewal with a card", func() *grpc.ClientConn { return dial(t, good.tlsCert()) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewRenewalClient(c).Confirm(ctx, &credgwv1.ConfirmRequest{})
			return err
		}, codes.PermissionDenied},
		{"Admin lists as portal", func() *grpc.ClientConn { return portalConn(t) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewAdminClient(c).ListActivations(ctx, &credgwv1.ListActivationsRequest{})
			return err
		}, codes.PermissionDenied},
		{"Enrollment without a PIV session", func() *grpc.ClientConn { return portalConn(t) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewEnrollmentClient(c).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{})
			return err
		}, codes.Unauthenticated},
		{"Enrollment without client certificate", func() *grpc.ClientConn { return dial(t) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewEnrollmentClient(c).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{})
			return err
		}, codes.Unauthenticated},
		{"Redemption open to anyone (request checked)", func() *grpc.ClientConn { return dial(t) }, func(c *grpc.ClientConn) error {
			_, err := credgwv1.NewRedemptionClient(c).Confirm(ctx, &credgwv1.ConfirmRequest{})
			return err
		}, codes.InvalidArgument},
		{"health open", func() *grpc.ClientConn { return dial(t) }, func(c *grpc.ClientConn) error {
			r, err := healthpb.NewHealthClient(c).Check(ctx, &healthpb.HealthCheckRequest{})
			if err == nil && r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health %v", r.GetStatus())
			}
			return err
		}, codes.OK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.call(tc.conn()), tc.want) })
	}

	// A certificate of the client CA that no roles entry names: the
	// refusal says so (a newcomer read "not allowed for role anonymous").
	ca := keyPair(t, dev.CAFile, filepath.Join(dev.Dir, "tls", "ca.key"))
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject: pkix.Name{CommonName: "credgw-stranger"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, caCert, k.Public(), ca.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	err = forceCRL(dial(t, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}))
	wantCode(t, err, codes.PermissionDenied)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "roles.admin") || !strings.Contains(msg, "credgw-stranger") {
		t.Errorf("a certificate no role names: %q", msg)
	}

	// A PIV caller can complete a session only for the card of its TLS
	// connection.
	other := newCard(t, hsmsim.CardSpec{})
	conn := dial(t, good.tlsCert())
	client := credgwv1.NewPIVAuthClient(conn)
	b, _ := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
	_, err = client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: other.auth.Raw, Signature: other.sign(t, b)})
	wantCode(t, err, codes.PermissionDenied)
	if _, err := login(t, conn, good); err != nil {
		t.Fatalf("own card over its own TLS connection: %v", err)
	}
}

func beginSession(c *grpc.ClientConn) error {
	_, err := credgwv1.NewPIVAuthClient(c).BeginSession(context.Background(), &credgwv1.BeginSessionRequest{})
	return err
}

func forceCRL(c *grpc.ClientConn) error {
	_, err := credgwv1.NewAdminClient(c).ForceCRL(context.Background(), &credgwv1.ForceCRLRequest{})
	return err
}

// TestPanicRecovery: a panic in a handler is Internal, and the server keeps
// serving.
func TestPanicRecovery(t *testing.T) {
	conn := portalConn(t)
	panicNext.Store(true)
	err := beginSession(conn)
	wantCode(t, err, codes.Internal)
	if strings.Contains(status.Convert(err).Message(), "exploded") {
		t.Error("the panic's text reached the client")
	}
	if err := beginSession(conn); err != nil {
		t.Fatalf("after the panic: %v", err)
	}
	if !strings.Contains(logs.String(), "panic in handler") {
		t.Error("the panic was not logged")
	}
}

// fetchHTTP answers a plain-HTTP request: the status and the body.
func fetchHTTP(t *testing.T, method, addr, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPEndpoints: listen.management serves operators (health,
// readiness, metrics, profiles) and listen.http relying parties (CRLs,
// OCSP, CA certificates); neither serves the other's paths (issue 16,
// point 4).
func TestHTTPEndpoints(t *testing.T) {
	beginSession(portalConn(t))
	mgmt, public := gw.ManagementAddr(), gw.HTTPAddr()
	if mgmt == "" || mgmt == public {
		t.Fatalf("management %q, public %q: want two listeners", mgmt, public)
	}
	get := func(addr, path string) string {
		t.Helper()
		code, body := fetchHTTP(t, "GET", addr, path)
		if code != 200 {
			t.Fatalf("%s%s: %d", addr, path, code)
		}
		return body
	}
	if got := get(mgmt, "/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
	if got := get(mgmt, "/readyz"); got != "ready\n" {
		t.Errorf("/readyz = %q", got)
	}
	if got := get(mgmt, "/debug/pprof/"); !strings.Contains(got, "goroutine") {
		t.Errorf("/debug/pprof/ lists no goroutine profile")
	}
	m := get(mgmt, "/metrics")
	for _, want := range []string{
		`credgw_grpc_requests_total{code="OK",method="/credgw.v1.PIVAuth/BeginSession"}`,
		`credgw_grpc_request_duration_seconds_bucket{code="OK",method="/credgw.v1.PIVAuth/BeginSession"`,
		"credgw_admission_waiting 0",
		"credgw_escrow_pool_failures_total 0",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// SQLite's own: the WAL and its checkpoints, and the group commit's
	// counters (PostgreSQL groups its commits' WAL flushes itself). A
	// PostgreSQL gateway exports none: a dashboard shows "No data", not a
	// flat 0.
	for _, name := range []string{"\ncredgw_sqlite_checkpoint_failures_total ", "\ncredgw_sqlite_wal_bytes ", "\ncredgw_sqlite_checkpoint_lag_frames ",
		"\ncredgw_sqlite_group_commits_total ", "\ncredgw_sqlite_group_writes_total "} {
		if got := strings.Contains(m, name); got != (cfg.Store.Driver == "sqlite") {
			t.Errorf("/metrics with store.driver %s has %s: %v", cfg.Store.Driver, strings.TrimSpace(name), got)
		}
	}
	crl := "/crl/" + cfg.CA.Name + ".crl"
	get(public, crl)
	get(public, "/ca/"+cfg.CA.Name+".p7c")
	for _, tc := range []struct{ method, addr, path string }{
		{"GET", public, "/healthz"},
		{"GET", public, "/readyz"},
		{"GET", public, "/metrics"},
		{"GET", public, "/debug/pprof/"},
		{"GET", public, "/debug/pprof/cmdline"},
		{"POST", public, "/v1/webhooks/termination"},
		{"GET", mgmt, crl},
		{"GET", mgmt, "/ca/" + cfg.CA.Name + ".p7c"},
		{"GET", mgmt, "/ocsp/" + cfg.CA.Name + "/MAA="},
	} {
		if code, _ := fetchHTTP(t, tc.method, tc.addr, tc.path); code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
			t.Errorf("%s %s%s: %d, want it not served there", tc.method, tc.addr, tc.path, code)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	const base = "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"
	// withCA is a config with an issuing CA and listen.http, outside a
	// development environment, plus ca fields.
	withCA := func(fields string) string {
		ca := "certificate_file: c, key_file: k"
		if fields != "" {
			ca += ", " + fields
		}
		return base + "listen: {http: '127.0.0.1:8080'}\nenrollment: {tls_anchor_file: a}\nescrow: {kek_file: k}\nca: {" + ca + "}\n"
	}
	tests := []struct{ name, yaml, want string }{
		{"unknown field", "gateway_id: x\nbogus: 1\n", "bogus"},
		{"no tls", "piv: {trust_anchor_files: [a]}\n", "tls.cert_file"},
		{"no anchors", "tls: {cert_file: a, key_file: b}\n", "trust_anchor_files"},
		{"bad duration", "piv: {challenge_ttl: soon}\n", "duration"},
		{"session too long", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a], session_ttl: 1h}\n", "session_ttl"},
		{"linkage interval too long", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlinkage: {interval: 200h}\n", "linkage.interval"},
		{"linkage on_unknown", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlinkage: {on_unknown: ignore}\n", "linkage.on_unknown"},
		{"webhook skew", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\ntermination_webhook: {max_skew: 1h}\n", "max_skew"},
		{"portal address", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nportal: {listen: nowhere}\n", "portal.listen"},
		{"bad policy", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a], policies: [abc]}\n", "OID"},
		{"roles without CA", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nroles: {admin: [{subject_cn: x}]}\n", "client_ca_files"},
		{"bad tls version", "tls: {cert_file: a, key_file: b, min_version: '1.1'}\npiv: {trust_anchor_files: [a]}\n", "min_version"},
		{"new_work below -1", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {new_work: -2}\n", "limits.new_work"},
		{"bad listen", "listen: {grpc: nowhere}\ntls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n", "listen.grpc"},
		{"memory_limit too small", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {memory_limit: 1048576}\n", "limits.memory_limit"},
		{"memory_limit below -1", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {memory_limit: -2}\n", "limits.memory_limit"},
		{"source_prefix_v6 too short", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {source_prefix_v6: 8}\n", "limits.source_prefix_v6"},
		{"max_watch_streams_per_source below -1", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {max_watch_streams_per_source: -2}\n", "limits.max_watch_streams_per_source"},
		{"sqlite_synchronous unknown", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nstore: {sqlite_synchronous: off}\n", "store.sqlite_synchronous"},
		{"portal max_connection_age too short", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nportal: {max_connection_age: 500ms}\n", "portal.max_connection_age"},
		{"portal max_connection_age past an hour", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nportal: {max_connection_age: 2h}\n", "portal.max_connection_age"},
		{"device failures burst 0", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {rates: {device_failures_per_address: {per_second: 1, burst: -1}}}\n", "limits.rates.device_failures_per_address"},
		{"source_prefix_v6 past 128", "tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\nlimits: {source_prefix_v6: 129}\n", "limits.source_prefix_v6"},
		{"no base_url", withCA(""), "ca.base_url is required"},
		// Devices dial the QR code's address; the agent refuses one
		// without a port, and none can dial "every address".
		{"gateway_address without a port", strings.Replace(withCA("base_url: http://pki.example"), "enrollment: {", "enrollment: {gateway_address: gw.example, ", 1),
			"enrollment.gateway_address"},
		{"gateway_address every address", strings.Replace(withCA("base_url: http://pki.example"), "listen: {", "listen: {grpc: '0.0.0.0:8443', ", 1),
			"enrollment.gateway_address"},
		{"gateway_address IPv6 every address", strings.Replace(withCA("base_url: http://pki.example"), "enrollment: {", "enrollment: {gateway_address: '[::]:8443', ", 1),
			"enrollment.gateway_address"},
		{"loopback base_url", withCA("base_url: http://127.0.0.1:8080"), "loopback"},
		{"localhost base_url", withCA("base_url: http://localhost"), "loopback"},
		{"IPv6 loopback base_url", withCA("base_url: 'http://[::1]:80'"), "loopback"},
		{"unspecified base_url", withCA("base_url: http://0.0.0.0"), "loopback"},
		{"https base_url", withCA("base_url: https://pki.example.gov"), "an http URL"},
		{"hardware without a status list", withCA("base_url: http://pki.example.gov, hardware_backed_devices: true"), "attestation.status_file"},
		// Refusing unattested devices gates issuance on attestation too:
		// a revoked (leaked) attestation key must not pass for want of the
		// list.
		// A re-keyed CA takes a new name; each earlier key answers at
		// its own URLs with its own key.
		{"retired under the name in use", withCA("base_url: http://pki.example.gov, name: agency-ca, retired: [{name: agency-ca, certificate_file: old.crt, key_file: old.key}]"), "ca.retired[0].name"},
		{"retired without a key", withCA("base_url: http://pki.example.gov, name: agency-ca-2, retired: [{name: agency-ca, certificate_file: old.crt}]"), "ca.retired[0]: set exactly one of key_uri"},
		{"the CA key on the escrow key's id", base + "listen: {http: '127.0.0.1:8080'}\nenrollment: {tls_anchor_file: a}\nescrow: {kek_uri: 'pkcs11:token=ca;id=%02?pin-source=p'}\nca: {certificate_file: c, base_url: http://pki.example.gov, key_uri: 'pkcs11:token=ca;id=%02?pin-source=p'}\n", "escrow.kek_uri names the key id=02"},
		{"retired without a certificate", withCA("base_url: http://pki.example.gov, name: agency-ca-2, retired: [{name: agency-ca, key_file: old.key}]"), "ca.retired[0].certificate_file"},
		{"refuse unattested without a status list", withCA("base_url: http://pki.example.gov") + "attestation: {unattested: refuse}\n", "attestation.status_file"},
		{"webhook without listener", base + "termination_webhook: {secret_file: k}\n", "termination_webhook: no listener"},
		{"webhook half TLS", base + "termination_webhook: {secret_file: k, listen: '127.0.0.1:0', tls_cert_file: c}\n", "tls_cert_file and tls_key_file"},
		{"webhook TLS on management", base + "listen: {management: '127.0.0.1:0'}\ntermination_webhook: {secret_file: k, tls_cert_file: c, tls_key_file: k}\n", "needs termination_webhook.listen"},
		{"gateway address too long for a QR code", base + "enrollment: {gateway_address: '" + strings.Repeat("g", 120) + ".agency.example:8443'}\n", "enrollment.gateway_address"},
		{"webhook listen without secret", base + "termination_webhook: {listen: '127.0.0.1:0'}\n", "needs termination_webhook.secret_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := server.ParseConfig([]byte(tc.yaml), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	for _, ok := range []struct{ name, yaml string }{
		{"public base_url", withCA("base_url: http://pki.example.gov")},
		{"loopback in development", "development: true\n" + withCA("base_url: http://127.0.0.1:8080")},
		{"default base_url in development", "development: true\n" + withCA("")},
		{"webhook on management", base + "listen: {management: '127.0.0.1:0'}\ntermination_webhook: {secret_file: k}\n"},
		{"webhook on its own, TLS", base + "termination_webhook: {secret_file: k, listen: '127.0.0.1:0', tls_cert_file: c, tls_key_file: k}\n"},
	} {
		if _, err := server.ParseConfig([]byte(ok.yaml), t.TempDir()); err != nil {
			t.Errorf("%s: refused: %v", ok.name, err)
		}
	}
	c, err := server.ParseConfig([]byte("tls: {cert_file: a, key_file: b}\npiv: {trust_anchor_files: [a]}\n"), "/etc/credgw")
	if err != nil {
		t.Fatal(err)
	}
	if c.PIV.ChallengeTTL.Duration != 2*time.Minute || c.PIV.SessionTTL.Duration != 20*time.Minute || c.Path("a") != "/etc/credgw/a" ||
		c.Listen.GRPC != server.DefaultGRPCAddr || c.Store.Driver != "sqlite" || c.PIV.Policies[0] != server.DefaultPolicy ||
		c.Limits.MemoryLimit != server.DefaultMemoryLimit {
		t.Fatalf("defaults %+v", c)
	}
}

// TestSignInRateLimited: one card looping on BeginSession is held to its
// rate after a burst, with ResourceExhausted and a RetryInfo saying when
// to come back; another card is not held back by it (issue 14, point 7).
// TestSpentChallengeFreesItsSlot: a card's outstanding challenges are
// those issued and not yet spent. A challenge spent by a CompleteSession
// that fails (a bad signature here; an OCSP outage likewise) is no longer
// outstanding, and one that a CompleteSession never found (an unknown
// session id) frees nothing. Before, only a successful completion gave the
// slot back: a person whose sign-ins failed 16 times in two minutes was
// refused a challenge until they expired.
func TestSpentChallengeFreesItsSlot(t *testing.T) {
	ctx := context.Background()
	c := newCard(t, hsmsim.CardSpec{Email: "retries@example.com"})
	client := credgwv1.NewPIVAuthClient(dial(t, c.tlsCert()))
	for i := 0; i <= server.DefaultOutstandingChallenges; i++ {
		b, err := client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
		if err != nil {
			t.Fatalf("challenge %d after %d failed sign-ins: %v", i+1, i, err)
		}
		bad := append([]byte{}, c.sign(t, b)...)
		bad[len(bad)-1] ^= 1
		_, err = client.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: b.GetSessionId(), PivAuthCertificate: c.auth.Raw, Signature: bad})
		if status.Code(err) != codes.PermissionDenied && status.Code(err) != codes.Unauthenticated {
			t.Fatalf("a bad signature: %v", err)
		}
	}
	// Unknown session ids free nothing: the card's open challenges stay
	// counted.
	other := newCard(t, hsmsim.CardSpec{Email: "hoarder@example.com"})
	hoarder := credgwv1.NewPIVAuthClient(dial(t, other.tlsCert()))
	for i := 0; i < server.DefaultOutstandingChallenges; i++ {
		if _, err := hoarder.BeginSession(ctx, &credgwv1.BeginSessionRequest{}); err != nil {
			t.Fatalf("challenge %d: %v", i+1, err)
		}
	}
	for i := 0; i < 3; i++ {
		hoarder.CompleteSession(ctx, &credgwv1.CompleteSessionRequest{SessionId: "no-such-session", PivAuthCertificate: other.auth.Raw, Signature: []byte{1}})
	}
	_, err := hoarder.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
	wantCode(t, err, codes.ResourceExhausted)
}

func TestSignInRateLimited(t *testing.T) {
	ctx := context.Background()
	loud := newCard(t, hsmsim.CardSpec{Email: "loud@example.com"})
	conn := dial(t, loud.tlsCert())
	client := credgwv1.NewPIVAuthClient(conn)
	var refused error
	for i := 0; i < 500 && refused == nil; i++ { // bounded
		_, refused = client.BeginSession(ctx, &credgwv1.BeginSessionRequest{})
	}
	st, _ := status.FromError(refused)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("500 BeginSession calls from one card: last %v, want ResourceExhausted", refused)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Fatalf("no RetryInfo in %v", st.Details())
	}
	quiet := newCard(t, hsmsim.CardSpec{Email: "quiet@example.com"})
	if _, err := credgwv1.NewPIVAuthClient(dial(t, quiet.tlsCert())).BeginSession(ctx, &credgwv1.BeginSessionRequest{}); err != nil {
		t.Fatalf("another card: %v", err)
	}
}
