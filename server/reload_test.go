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
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// TestReload: what a reload (SIGHUP) applies while the gateway serves —
// a rotated TLS certificate on gRPC and the portal, roles, PIV trust
// anchors —, what it leaves for a restart, and a reload that cannot read
// its files changes nothing.
func TestReload(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca := keyPair(t, dev.CAFile, filepath.Join(dev.Dir, "tls", "ca.key"))
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	// withAnchor: false writes the server certificate alone, without the
	// TLS anchor that devices pin (enrollment.tls_anchor_file).
	withAnchor := true
	writeServerCert := func(serial int64) {
		t.Helper()
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "credgw"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}, caCert, k.Public(), ca.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		kd, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
		if withAnchor {
			chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw})...)
		}
		if err := os.WriteFile(certFile, chain, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeServerCert(1001)

	first := *cfg
	first.Listen.GRPC, first.Listen.HTTP, first.Listen.Management, first.Portal.Listen = "127.0.0.1:0", "", "", "127.0.0.1:0"
	first.Store.Driver, first.Store.DSN = "sqlite", filepath.Join(dir, "reload.db")
	createStore(t, &first)
	first.TLS.CertFile, first.TLS.KeyFile = certFile, keyFile
	s, err := server.New(ctx, &first, server.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)

	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	serialAt := func(addr string) int64 {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatalf("handshake with %s: %v", addr, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	dialS := func(certs ...tls.Certificate) *grpc.ClientConn {
		conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs})))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	admin := keyPair(t, dev.AdminCert, dev.AdminKey)
	listAsAdmin := func() error {
		_, err := credgwv1.NewAdminClient(dialS(admin)).ListActivations(ctx, &credgwv1.ListActivationsRequest{})
		return err
	}
	devCard := openCard(t, dev.Card.Name, nil)
	portal := keyPair(t, dev.PortalCert, dev.PortalKey)

	if got := serialAt(s.GRPCAddr()); got != 1001 {
		t.Fatalf("serial before the reload: %d", got)
	}
	if err := listAsAdmin(); err != nil {
		t.Fatalf("admin before the reload: %v", err)
	}
	if _, err := login(t, dialS(portal), devCard); err != nil {
		t.Fatalf("sign-in before the reload: %v", err)
	}

	// Rotate the certificate, drop the admin role, trust another PIV root,
	// and change a field only a restart applies.
	writeServerCert(1002)
	next := first
	next.Roles.Admin = nil
	next.PIV.TrustAnchorFiles = []string{dev.CAFile}
	next.PIV.IntermediateFiles = nil
	next.Limits.RPCTimeout.Duration += time.Second
	restart, err := s.Reload(&next)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if !slices.Equal(restart, []string{"limits.rpc_timeout"}) {
		t.Errorf("fields for a restart = %q, want [limits.rpc_timeout]", restart)
	}
	for _, addr := range []string{s.GRPCAddr(), s.PortalAddr()} {
		if got := serialAt(addr); got != 1002 {
			t.Errorf("%s serves serial %d after the reload, want 1002", addr, got)
		}
	}
	if code := status.Code(listAsAdmin()); code != codes.PermissionDenied && code != codes.Unauthenticated {
		t.Errorf("admin call after the role was removed: %v", code)
	}
	if _, err := login(t, dialS(portal), devCard); status.Code(err) == codes.OK {
		t.Error("a card of a PIV root no longer trusted signed in")
	}

	// A reload that cannot read its certificate changes nothing.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Reload(&first); err == nil {
		t.Fatal("a reload with an unreadable certificate succeeded")
	}
	if got := serialAt(s.GRPCAddr()); got != 1002 {
		t.Errorf("after a failed reload the gateway serves serial %d, want 1002 still", got)
	}
	if code := status.Code(listAsAdmin()); code == codes.OK {
		t.Error("a failed reload brought the admin role back")
	}

	// Nor does one whose certificate leaves out the anchor that devices
	// pin: every redemption would fail the device's check of the gateway.
	withAnchor = false
	writeServerCert(1004)
	if _, err := s.Reload(&first); err == nil || !strings.Contains(err.Error(), "enrollment.tls_anchor_file") {
		t.Fatalf("a reload with a certificate devices would refuse: %v", err)
	}
	if got := serialAt(s.GRPCAddr()); got != 1002 {
		t.Errorf("after a refused reload the gateway serves serial %d, want 1002 still", got)
	}
	withAnchor = true

	// The anchor QR codes pin was read at start and is not reloadable:
	// a reload is checked against it, whatever the file named now says.
	writeServerCert(1005)
	moved := first
	moved.Enroll.TLSAnchorFile = dev.AdminCert // not what devices pin
	restart, err = s.Reload(&moved)
	if err != nil || !slices.Contains(restart, "enrollment.tls_anchor_file") {
		t.Fatalf("a reload naming another anchor: %v (restart %q), want it checked against the pinned one", err, restart)
	}

	// Back to the first config: roles and the card's root again.
	writeServerCert(1003)
	if _, err := s.Reload(&first); err != nil {
		t.Fatal(err)
	}
	if err := listAsAdmin(); err != nil {
		t.Errorf("admin after the role came back: %v", err)
	}
	if _, err := login(t, dialS(portal), devCard); err != nil {
		t.Errorf("sign-in after the root came back: %v", err)
	}
}

// TestRevokedClientCertificate: a role certificate its CA has revoked
// (tls.client_crl_files, reloaded with SIGHUP) gets no role; a CRL that
// none of tls.client_ca_files signed is refused and changes nothing.
func TestRevokedClientCertificate(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ca := keyPair(t, dev.CAFile, filepath.Join(dev.Dir, "tls", "ca.key"))
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	admin := keyPair(t, dev.AdminCert, dev.AdminKey)
	adminCert, err := x509.ParseCertificate(admin.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	crlFile := filepath.Join(dir, "clients.crl")
	writeCRL := func(issuer *x509.Certificate, key any, serials ...*big.Int) {
		t.Helper()
		var entries []x509.RevocationListEntry
		for _, s := range serials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now().Add(-time.Minute)})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(time.Now().UnixNano()),
			ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(24 * time.Hour), RevokedCertificateEntries: entries},
			issuer, key.(crypto.Signer))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crlFile, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCRL(caCert, ca.PrivateKey)

	// A second client CA, with room for an intermediate below it.
	root2Key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	root2Tmpl := &x509.Certificate{SerialNumber: big.NewInt(4710), Subject: pkix.Name{CommonName: "operators root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	root2DER, err := x509.CreateCertificate(rand.Reader, root2Tmpl, root2Tmpl, root2Key.Public(), root2Key)
	if err != nil {
		t.Fatal(err)
	}
	root2, _ := x509.ParseCertificate(root2DER)
	root2File := filepath.Join(dir, "operators-root.pem")
	os.WriteFile(root2File, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root2DER}), 0o644)

	c := *cfg
	c.Listen.GRPC, c.Listen.HTTP, c.Listen.Management, c.Portal.Listen = "127.0.0.1:0", "", "", ""
	c.Store.Driver, c.Store.DSN = "sqlite", filepath.Join(dir, "crl.db")
	createStore(t, &c)
	c.TLS.ClientCAFiles = append(slices.Clone(cfg.TLS.ClientCAFiles), root2File)
	c.TLS.ClientCRLFiles = []string{crlFile}
	s, err := server.New(ctx, &c, server.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	listAs := func(cert tls.Certificate) error {
		conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = credgwv1.NewAdminClient(conn).ListActivations(ctx, &credgwv1.ListActivationsRequest{})
		return err
	}
	listAsAdmin := func() error { return listAs(admin) }
	if err := listAsAdmin(); err != nil {
		t.Fatalf("admin, not revoked: %v", err)
	}

	// A CRL signed by some other key is refused; the old one stays.
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeCRL(caCert, otherKey, adminCert.SerialNumber)
	if _, err := s.Reload(&c); err == nil || !strings.Contains(err.Error(), "tls.client_crl_files") {
		t.Fatalf("reload with a CRL no client CA signed: %v", err)
	}
	if err := listAsAdmin(); err != nil {
		t.Fatalf("admin after a refused reload: %v", err)
	}

	// An admin certificate issued by an intermediate CA the client sends:
	// revoking the intermediate on its root's CRL revokes it too.
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(4711), Subject: pkix.Name{CommonName: "operators CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}, root2, interKey.Public(), root2Key)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(interDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(4712), Subject: pkix.Name{CommonName: "credgw-admin"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, inter, leafKey.Public(), interKey)
	if err != nil {
		t.Fatal(err)
	}
	underInter := tls.Certificate{Certificate: [][]byte{leafDER, interDER}, PrivateKey: leafKey}
	if err := listAs(underInter); err != nil {
		t.Fatalf("admin under an intermediate, not revoked: %v", err)
	}
	writeCRL(root2, root2Key, inter.SerialNumber)
	if _, err := s.Reload(&c); err != nil {
		t.Fatal(err)
	}
	err = listAs(underInter)
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "revoked") {
		t.Fatalf("admin under a revoked intermediate: %v, want PermissionDenied saying revoked", err)
	}

	writeCRL(caCert, ca.PrivateKey, adminCert.SerialNumber)
	if _, err := s.Reload(&c); err != nil {
		t.Fatal(err)
	}
	err = listAsAdmin()
	if st := status.Convert(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "revoked") {
		t.Fatalf("admin with a revoked certificate: %v, want PermissionDenied saying revoked", err)
	}

}
