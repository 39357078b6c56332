package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/piv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Roles a caller can have.
const (
	roleAnonymous = "anonymous"
	rolePortal    = "portal"
	roleAdmin     = "admin"
	// rolePIV is a person whose TLS client certificate is a valid PIV
	// Authentication certificate (SP 800-157r1 App. C.1).
	rolePIV = "piv"
)

// methodRoles says who may call what. A service not listed is refused.
var methodRoles = map[string][]string{
	"/grpc.health.v1.Health/":                    nil, // open
	"/grpc.reflection.v1.ServerReflection/":      nil, // open for grpcurl; streams.go bounds how many and how long
	"/grpc.reflection.v1alpha.ServerReflection/": nil,
	"/credgw.v1.PIVAuth/":                        {rolePortal, rolePIV},
	"/credgw.v1.Enrollment/":                     {rolePortal, rolePIV},
	"/credgw.v1.Redemption/":                     nil, // the activation secret and password are the proof
	"/credgw.v1.Renewal/":                        nil, // the derived PIV Auth certificate is checked by the handler
	"/credgw.v1.Admin/":                          {roleAdmin},
}

func rolesFor(method string) ([]string, bool) {
	for prefix, roles := range methodRoles {
		if strings.HasPrefix(method, prefix) {
			return roles, true
		}
	}
	return nil, false
}

// caller is who is calling, as established by the TLS client certificate.
type caller struct {
	role string
	cert *x509.Certificate
	// piv is set for rolePIV: the verified card.
	piv *piv.Result
}

type callerKey struct{}

// callerSlot lets the authorization interceptor tell the outer logging
// interceptor who called.
type callerSlot struct{ c *caller }

func withCallerSlot(ctx context.Context) context.Context {
	return context.WithValue(ctx, callerKey{}, &callerSlot{})
}

func callerFrom(ctx context.Context) (*caller, bool) {
	slot, ok := ctx.Value(callerKey{}).(*callerSlot)
	if !ok || slot.c == nil {
		return nil, false
	}
	return slot.c, true
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(auditCaller(ctx), req)
}

func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := s.authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, &wrappedStream{ServerStream: ss, ctx: auditCaller(ss.Context())})
}

// auditCaller tells the audit log who calls: the source address, and an
// administrator's certificate subject and SHA-256.
func auditCaller(ctx context.Context) context.Context {
	var ac audit.Caller
	if p, ok := peer.FromContext(ctx); ok {
		ac.Source = p.Addr.String()
	}
	if c, ok := callerFrom(ctx); ok && c.role == roleAdmin && c.cert != nil {
		sum := sha256.Sum256(c.cert.Raw)
		ac.Admin = c.cert.Subject.String() + "; sha256=" + hex.EncodeToString(sum[:])
	}
	return audit.WithCaller(ctx, ac)
}

// authorize establishes the caller's role and checks it against the method.
func (s *Server) authorize(ctx context.Context, method string) error {
	allowed, known := rolesFor(method)
	if !known {
		return status.Errorf(codes.PermissionDenied, "method %s is not served", method)
	}
	c, err := s.identify(ctx, allowed)
	if slot, ok := ctx.Value(callerKey{}).(*callerSlot); ok && c != nil {
		slot.c = c
	}
	if allowed == nil {
		return nil
	}
	if err != nil {
		return err
	}
	if slices.Contains(allowed, c.role) {
		return nil
	}
	if c.cert == nil {
		return status.Errorf(codes.Unauthenticated, "%s needs a TLS client certificate: the portal's, or the card's PIV Authentication certificate", method)
	}
	if c.role == roleAnonymous {
		// A certificate the gateway gives no role: say why, in the
		// config's terms.
		return status.Errorf(codes.PermissionDenied, "%s is not allowed: the client certificate %q has no role here "+
			"(no roles.admin or roles.portal entry matches it, or tls.client_ca_files does not hold its CA, or a client CRL lists it); allowed: %s",
			method, c.cert.Subject.String(), strings.Join(allowed, ", "))
	}
	return status.Errorf(codes.PermissionDenied, "%s is not allowed for role %s (allowed: %s)", method, c.role, strings.Join(allowed, ", "))
}

// identify finds the caller's role from the TLS client certificate: a
// certificate from the configured client CAs matched by roles.portal or
// roles.admin, else (where the method allows it) a valid PIV
// Authentication certificate. A failing PIV check is returned as the error.
func (s *Server) identify(ctx context.Context, allowed []string) (*caller, error) {
	c := &caller{role: roleAnonymous}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return c, nil
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return c, nil
	}
	certs := tlsInfo.State.PeerCertificates
	c.cert = certs[0]
	if l := s.live.Load(); l.clientCAs != nil && len(certs)-1 > maxClientIntermediates {
		return c, status.Errorf(codes.PermissionDenied, "the TLS client certificate came with %d CA certificates; at most %d are taken: "+
			"send the certificate and the CAs up to the client CA (or the card's up to its anchor) only", len(certs)-1, maxClientIntermediates)
	} else if perr := piv.CheckPresented(certs[1:]); l.clientCAs != nil && perr != nil && slices.Contains(allowed, roleAdmin) {
		// An administrator's call whose chain no path is built for: say
		// why, rather than treat it as anonymous. (Where PIV cards may
		// call, VerifyPIVAuth below says it; open methods stay open.)
		return c, status.Errorf(codes.PermissionDenied, "the TLS client certificate's chain was not taken: %v", perr)
	} else if l.clientCAs != nil && perr == nil {
		// CA certificates no path has (huge keys, one name many times)
		// are not built into one: VerifyPIVAuth below refuses them.
		if chain := l.clientChains.verify(certs, l.clientCAs, time.Now()); chain != nil {
			if r := l.clientRevoked(chain); r != nil {
				return c, status.Errorf(codes.PermissionDenied, "the TLS client certificate's chain has %q (serial %s), revoked by its CA (tls.client_crl_files)", r.Subject.CommonName, r.SerialNumber.Text(16))
			}
			switch {
			case matchesAny(c.cert, l.roles.Admin):
				c.role = roleAdmin
			case matchesAny(c.cert, l.roles.Portal):
				c.role = rolePortal
			}
			return c, nil
		}
	}
	if !slices.Contains(allowed, rolePIV) {
		return c, nil
	}
	res, err := s.verifier.VerifyPIVAuth(ctx, c.cert, certs[1:])
	if err != nil {
		return c, toStatus(fmt.Errorf("TLS client certificate: %w", err))
	}
	c.role, c.piv = rolePIV, res
	return c, nil
}

func matchesAny(cert *x509.Certificate, ms []ClientMatch) bool {
	fp := sha256.Sum256(cert.Raw)
	hexFP := hex.EncodeToString(fp[:])
	for _, m := range ms {
		if m.SubjectCN != "" && cert.Subject.CommonName != m.SubjectCN {
			continue
		}
		if m.SHA256 != "" && !strings.EqualFold(strings.ReplaceAll(m.SHA256, ":", ""), hexFP) {
			continue
		}
		if m.DNSName != "" && !slices.Contains(cert.DNSNames, m.DNSName) {
			continue
		}
		return true
	}
	return false
}

// maxClientIntermediates bounds the CA certificates a caller presents
// with a portal or administrator certificate: more are not built into a
// path (the caller chooses them, and each can cost signature checks).
const maxClientIntermediates = 8

// chainCache remembers, for a minute, the chain built for a caller's TLS
// client certificates against tls.client_ca_files, or that none could be:
// every call on a connection carries the same certificates, and identify
// runs before any rate limit. A reload makes a new cache.
type chainCache struct {
	builds atomic.Int64 // chains built (crypto/x509 Verify calls)
	mu     sync.Mutex
	m      map[[32]byte]cachedChain
}

type cachedChain struct {
	chain []*x509.Certificate // nil: none to the client CAs
	until time.Time
}

func newChainCache() *chainCache { return &chainCache{m: map[[32]byte]cachedChain{}} }

// verify is the first chain from certs[0] to roots with certs[1:] as
// intermediates, or nil.
func (cc *chainCache) verify(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) []*x509.Certificate {
	h := sha256.New()
	for _, c := range certs {
		sum := sha256.Sum256(c.Raw)
		h.Write(sum[:])
	}
	var key [32]byte
	h.Sum(key[:0])
	cc.mu.Lock()
	e, ok := cc.m[key]
	cc.mu.Unlock()
	if ok && now.Before(e.until) && (e.chain == nil || validAt(e.chain, now)) {
		return e.chain
	}
	cc.builds.Add(1)
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	var chain []*x509.Certificate
	if chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		chain = chains[0]
	}
	cc.mu.Lock()
	if len(cc.m) >= 4096 {
		clear(cc.m)
	}
	cc.m[key] = cachedChain{chain: chain, until: now.Add(time.Minute)}
	cc.mu.Unlock()
	return chain
}

func validAt(chain []*x509.Certificate, now time.Time) bool {
	for _, c := range chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return false
		}
	}
	return true
}
