package pivclient

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// OpenCard refuses a PIN given both as pinFile and in the URI, and a URI
// that does not parse, before it looks for a module or a token.
func TestOpenCardRefuses(t *testing.T) {
	ctx := context.Background()
	for _, uri := range []string{
		"pkcs11:token=card?pin-source=/etc/credgw/pin",
		"pkcs11:token=card?pin-value=123456",
	} {
		_, err := OpenCard(ctx, uri, "card.pin", "")
		if err == nil || err.Error() != "give the PIN either with --pin-file or in the URI, not both" {
			t.Errorf("%s with a PIN file: %v", uri, err)
		}
	}
	if _, err := OpenCard(ctx, "token=card", "", ""); err == nil {
		t.Error("a URI without the pkcs11: scheme was accepted")
	}
}

func TestLoadRoots(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadRoots(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("not PEM"), 0o600)
	if _, err := LoadRoots(junk); err == nil || err.Error() != junk+" holds no PEM certificate" {
		t.Errorf("no PEM: %v", err)
	}
	ca, _ := newCert(t, "CA", nil, nil)
	good := filepath.Join(dir, "ca.pem")
	os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o600)
	if roots, err := LoadRoots(good); err != nil || roots == nil {
		t.Errorf("good file: %v", err)
	}
}

// SignIn refuses incomplete options without dialling.
func TestSignInOptions(t *testing.T) {
	card := newSoftCard(t)
	roots := x509.NewCertPool()
	for name, o := range map[string]Options{
		"no gateway": {Roots: roots, Card: card},
		"no roots":   {Gateway: "127.0.0.1:1", Card: card},
		"no card":    {Gateway: "127.0.0.1:1", Roots: roots},
	} {
		if _, err := SignIn(context.Background(), o); err == nil || !strings.HasPrefix(err.Error(), "pivclient: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// SignIn against a PIVAuth service that checks what a gateway checks: the
// TLS client certificate is the card's 9A certificate, and the challenge
// signature verifies with it over piv.ChallengeDigest. The session's
// connection stays open (with the card) for further calls; a refused
// CompleteSession and a card that cannot sign fail with what the gateway
// or the card said.
func TestSignIn(t *testing.T) {
	card := newSoftCard(t)
	svc := &fakePIVAuth{}
	addr, roots := startGateway(t, svc)
	var calls atomic.Int32
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		calls.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := SignIn(ctx, Options{Gateway: addr, Roots: roots, Card: card, DialOptions: []grpc.DialOption{count}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Begin.GetGatewayId() != "test-gateway" || s.Result.GetSessionToken() != "token" || s.Result.GetIdentity().GetSubject() != "CN=Card" {
		t.Errorf("session: begin %v result %v", s.Begin, s.Result)
	}
	if !bytes.Equal(svc.dsCert.Load().([]byte), card.ds.Raw) {
		t.Error("the Digital Signature certificate was not sent")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("dial options saw %d calls, want 2", n)
	}
	// The connection is still usable.
	if _, err := credgwv1.NewPIVAuthClient(s.Conn).BeginSession(ctx, &credgwv1.BeginSessionRequest{}); err != nil {
		t.Errorf("the session's connection: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}

	svc.refuse.Store(true)
	if _, err := SignIn(ctx, Options{Gateway: addr, Roots: roots, Card: card}); status.Code(err) != codes.PermissionDenied || !strings.HasPrefix(err.Error(), "CompleteSession: ") {
		t.Errorf("refused: %v", err)
	}
	svc.refuse.Store(false)

	broken := *card
	broken.signErr = errors.New("the card is gone")
	if _, err := SignIn(ctx, Options{Gateway: addr, Roots: roots, Card: &broken}); err == nil || err.Error() != "the card is gone" {
		t.Errorf("card that cannot sign: %v", err)
	}

	// A gateway whose certificate the roots do not trust is not asked.
	other, _ := newCert(t, "Other CA", nil, nil)
	untrusted := x509.NewCertPool()
	untrusted.AddCert(other)
	if _, err := SignIn(ctx, Options{Gateway: addr, Roots: untrusted, Card: card}); err == nil || !strings.HasPrefix(err.Error(), "BeginSession: ") {
		t.Errorf("untrusted gateway: %v", err)
	}
}

// softCard is a card in software: a P-256 9A key and its certificate, and
// a Digital Signature certificate.
type softCard struct {
	auth, ds *x509.Certificate
	key      *ecdsa.PrivateKey
	signErr  error
}

func newSoftCard(t *testing.T) *softCard {
	auth, key := newCert(t, "Card", nil, nil)
	ds, _ := newCert(t, "Card signature", nil, nil)
	return &softCard{auth: auth, ds: ds, key: key}
}

func (c *softCard) AuthCertificate(context.Context) (*x509.Certificate, error) { return c.auth, nil }
func (c *softCard) AuthSigner(context.Context) (crypto.Signer, error)          { return c.key, nil }

func (c *softCard) Certificate(_ context.Context, slot pkcs11.PIVSlot) (*x509.Certificate, error) {
	if slot.KeyRef == pkcs11.PIVSignature.KeyRef {
		return c.ds, nil
	}
	return nil, errors.New("no such certificate")
}

func (c *softCard) SignChallenge(_ context.Context, gatewayID, sessionID string, challenge []byte) ([]byte, error) {
	if c.signErr != nil {
		return nil, c.signErr
	}
	return ecdsa.SignASN1(rand.Reader, c.key, piv.ChallengeDigest(gatewayID, sessionID, challenge))
}

// fakePIVAuth checks a sign-in as the gateway does, without the identity
// checks (chain, revocation, FASC-N).
type fakePIVAuth struct {
	credgwv1.UnimplementedPIVAuthServer
	challenge atomic.Value // []byte
	dsCert    atomic.Value // []byte
	refuse    atomic.Bool
	// alter, if set, changes the BeginSession answer (a gateway that is
	// not what it should be).
	alter  atomic.Value // func(*credgwv1.BeginSessionResponse)
	signed atomic.Int32 // CompleteSession calls
}

func (f *fakePIVAuth) BeginSession(context.Context, *credgwv1.BeginSessionRequest) (*credgwv1.BeginSessionResponse, error) {
	ch := make([]byte, piv.ChallengeSize)
	rand.Read(ch)
	f.challenge.Store(ch)
	r := &credgwv1.BeginSessionResponse{SessionId: "session", Challenge: ch, GatewayId: "test-gateway"}
	if alter, ok := f.alter.Load().(func(*credgwv1.BeginSessionResponse)); ok && alter != nil {
		alter(r)
	}
	return r, nil
}

func (f *fakePIVAuth) CompleteSession(ctx context.Context, r *credgwv1.CompleteSessionRequest) (*credgwv1.CompleteSessionResponse, error) {
	f.signed.Add(1)
	p, _ := peer.FromContext(ctx)
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 || !bytes.Equal(tlsInfo.State.PeerCertificates[0].Raw, r.GetPivAuthCertificate()) {
		return nil, status.Error(codes.Unauthenticated, "the TLS client certificate is not the PIV Authentication certificate")
	}
	cert := tlsInfo.State.PeerCertificates[0]
	digest := piv.ChallengeDigest("test-gateway", r.GetSessionId(), f.challenge.Load().([]byte))
	if err := piv.VerifyChallengeSignature(cert.PublicKey, piv.SigAuto, digest, r.GetSignature()); err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	if f.refuse.Load() {
		return nil, status.Error(codes.PermissionDenied, "card revoked")
	}
	f.dsCert.Store(r.GetDigitalSignatureCertificate())
	return &credgwv1.CompleteSessionResponse{SessionToken: "token", Identity: &credgwv1.PIVIdentity{Subject: "CN=" + cert.Subject.CommonName}}, nil
}

// startGateway serves svc over TLS on 127.0.0.1, asking for any client
// certificate; it returns the address and the roots that trust it.
func startGateway(t *testing.T, svc credgwv1.PIVAuthServer) (string, *x509.CertPool) {
	ca, caKey := newCert(t, "Test CA", nil, nil)
	leaf, leafKey := newCert(t, "127.0.0.1", ca, caKey)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequireAnyClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: leafKey, Leaf: leaf}},
	})))
	credgwv1.RegisterPIVAuthServer(srv, svc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), roots
}

// newCert makes a P-256 certificate, self-signed (a CA) when parent is nil,
// else a server certificate for 127.0.0.1.
func newCert(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	signer := key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		parent = tmpl
	} else {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		signer = parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestSignInChecksWhatItSigns: the card signed whatever the server sent:
// a gateway id other than the one the person means to sign in to (a
// server relaying another gateway's challenge), an id with a NUL (the
// digest separates its fields with NULs), an empty or short challenge,
// an empty session id. Such a BeginSession is refused and nothing is
// signed; Options.GatewayID, when given, must be the gateway's id.
func TestSignInChecksWhatItSigns(t *testing.T) {
	card := newSoftCard(t)
	svc := &fakePIVAuth{}
	addr, roots := startGateway(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name   string
		expect string
		alter  func(*credgwv1.BeginSessionResponse)
		want   string
	}{
		{"another gateway's id", "staging", nil, `calls itself "test-gateway"`},
		{"a NUL in the id", "", func(r *credgwv1.BeginSessionResponse) { r.GatewayId = "test\x00gateway" }, "gateway id"},
		{"no id", "", func(r *credgwv1.BeginSessionResponse) { r.GatewayId = "" }, "gateway id"},
		{"a short challenge", "", func(r *credgwv1.BeginSessionResponse) { r.Challenge = r.Challenge[:8] }, "challenge"},
		{"no session id", "", func(r *credgwv1.BeginSessionResponse) { r.SessionId = "" }, "session id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc.alter.Store(tc.alter)
			before := svc.signed.Load()
			_, err := SignIn(ctx, Options{Gateway: addr, Roots: roots, Card: card, GatewayID: tc.expect})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one saying %q", err, tc.want)
			}
			if svc.signed.Load() != before {
				t.Fatal("a signature was sent")
			}
		})
	}
	svc.alter.Store(func(*credgwv1.BeginSessionResponse) {})
	s, err := SignIn(ctx, Options{Gateway: addr, Roots: roots, Card: card, GatewayID: "test-gateway"})
	if err != nil {
		t.Fatalf("the expected gateway id: %v", err)
	}
	s.Close()
}
