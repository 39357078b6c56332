package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestClientChainNotRebuiltPerCall: with tls.client_ca_files set, every
// call's TLS client chain was built against the client CAs, before any
// rate limit, with whatever intermediates the caller presented (up to 100
// signature checks a call). A chain is now built once per minute however
// many calls its connection carries, and more intermediates than a path
// needs are not built at all.
func TestClientChainNotRebuiltPerCall(t *testing.T) {
	now := time.Now()
	mk := func(name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) (*x509.Certificate, *ecdsa.PrivateKey) {
		return issueTest(t, &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: name}, NotBefore: now.Add(-time.Hour),
			NotAfter: now.Add(time.Hour), IsCA: isCA, BasicConstraintsValid: isCA, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, parent, parentKey)
	}
	clientCA, _ := mk("client CA", nil, nil, true)
	fake, fakeKey := mk("client CA", nil, nil, true) // its name, another key
	leaf, _ := mk("a caller of its own making", fake, fakeKey, false)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA)
	s := &Server{}
	l := &live{clientCAs: pool, clientChains: newChainCache()}
	s.live.Store(l)
	call := func(chain ...*x509.Certificate) *caller {
		ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1},
			AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: chain}}})
		c, err := s.identify(ctx, []string{roleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for range 5 {
		if c := call(leaf, fake); c.role != roleAnonymous {
			t.Fatalf("a self-made chain got role %s", c.role)
		}
	}
	if n := l.clientChains.builds.Load(); n != 1 {
		t.Fatalf("5 calls with one chain built it %d times, want 1", n)
	}
	many := []*x509.Certificate{leaf}
	for range maxClientIntermediates + 1 {
		c, _ := mk("client CA", nil, nil, true)
		many = append(many, c)
	}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: many}}})
	if _, err := s.identify(ctx, []string{roleAdmin}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a chain of %d: %v, want PermissionDenied saying how many are taken", len(many), err)
	}
	if n := l.clientChains.builds.Load(); n != 1 {
		t.Fatalf("a chain with %d intermediates was built", len(many)-1)
	}
}
