package issuance

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/credgw/credgw/store"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/crypto/ocsp"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// OCSP timing. A response is signed with nextUpdate = thisUpdate + ocspLife
// and served, from this replica's memory, until its refresh point half way
// through; thisUpdate is backdated by ocspBackdate for relying parties whose
// clocks lag, but never to before the revocation it reports.
const (
	ocspLife     = 4 * time.Hour
	ocspRefresh  = ocspLife / 2
	ocspBackdate = time.Minute
	// ocspCacheMax bounds the responses a replica keeps, the least
	// recently used dropped first. Only certificates this CA issued get
	// an entry (unknown serials are answered without one).
	ocspCacheMax = 50_000
	// OCSPSignRate and OCSPSignBurst bound the responses a replica signs
	// a second (a token bucket): anyone may ask, every answer not in the
	// cache costs a signature by the CA key, the HSM key that issuance
	// uses too, and revoked serials are public (the CRL). Past it the
	// answer is tryLater, unsigned and not cached (RFC 6960 §2.3), and
	// relying parties ask again; cached answers are always served.
	OCSPSignRate  = 500
	OCSPSignBurst = 5000
	// OCSPSignRatePerSource and OCSPSignBurstPerSource bound what one
	// source (an IPv4 address, an IPv6 /64) may spend of that budget, so
	// that one client cycling through revoked serials cannot take it
	// all. Behind a proxy that hides client addresses every client is
	// the proxy: put a caching proxy (a CDN) there, which asks once per
	// answer.
	OCSPSignRatePerSource  = 50
	OCSPSignBurstPerSource = 500
	ocspSources            = 16384 // sources whose budget is remembered
)

// ocspResponder is what a replica keeps to answer OCSP without signing:
// the issuer's CertID hashes and the signed responses per certificate.
//
// Each replica signs and caches on its own. Every request still reads the
// certificate's row (one indexed SELECT, no signature) and reuses a cached
// response only if it reports the same state: a revocation, on any
// replica, replaces the answer on the next request everywhere (while the database
// answers: a replica that cannot reach it serves its cached answer until
// the refresh point, ocspAnswer).
type ocspResponder struct {
	issuerHashes map[crypto.Hash][2][]byte // name hash, key hash
	cache        *lru.TwoQueueCache[ocspKey, ocspAnswer]
	signs        *rate.Limiter // OCSPSignRate
	// perSource is each source's share of signs (OCSPSignRatePerSource).
	perSource *lru.Cache[string, *rate.Limiter]
	flight    singleflight.Group
}

// ocspSourceKey carries the source of an OCSP request (ocspSource) in its
// context.
type ocspSourceKey struct{}

// ocspSource is the budget key of a request's remote address: the IPv4
// address, or the IPv6 /64 (one subscriber holds a whole /64).
func ocspSource(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		if host, _, err := net.SplitHostPort(remote); err == nil {
			return host
		}
		return remote
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// allowSign spends one signature of the replica's budget and of source's
// share ("" for a caller with no source: the replica's budget only).
func (r *ocspResponder) allowSign(source string) bool {
	if source == "" || r.signs.Limit() == rate.Inf {
		return r.signs.Allow() // no source, or no budget at all (benchmarks)
	}
	lim, ok := r.perSource.Get(source)
	if !ok {
		lim = rate.NewLimiter(OCSPSignRatePerSource, OCSPSignBurstPerSource)
		r.perSource.Add(source, lim)
	}
	mine := lim.Reserve()
	if !mine.OK() || mine.Delay() > 0 {
		mine.Cancel()
		return false
	}
	if !r.signs.Allow() {
		mine.Cancel() // refused by the replica's budget: the source's share is not spent
		return false
	}
	return true
}

// ocspKey names a cached response: the CertID's hash algorithm is part of
// the signed SingleResponse, so SHA-1 and SHA-256 askers get different
// responses.
type ocspKey struct {
	hash   crypto.Hash
	serial string
}

// ocspAnswer is a DER OCSPResponse and, for a signed one, how long it may
// be served.
type ocspAnswer struct {
	der        []byte
	state      string // the status the response reports (cache validity)
	thisUpdate time.Time
	nextUpdate time.Time
	refresh    time.Time // serve until then, then sign anew
	etag       string
}

// signed reports whether the answer is a signed (cacheable) response
// rather than one of the unsigned error responses.
func (a ocspAnswer) signed() bool { return !a.thisUpdate.IsZero() }

func unsigned(der []byte) ocspAnswer { return ocspAnswer{der: der} }

func newOCSPResponder(ca *x509.Certificate) (*ocspResponder, error) {
	bits, err := publicKeyBits(ca)
	if err != nil {
		return nil, fmt.Errorf("issuance: CA public key: %w", err)
	}
	// Two queues: answers asked for once (a scan through serials) are
	// dropped before answers asked for again.
	cache, err := lru.New2Q[ocspKey, ocspAnswer](ocspCacheMax)
	if err != nil {
		return nil, err
	}
	perSource, err := lru.New[string, *rate.Limiter](ocspSources)
	if err != nil {
		return nil, err
	}
	r := &ocspResponder{issuerHashes: map[crypto.Hash][2][]byte{}, cache: cache, signs: rate.NewLimiter(OCSPSignRate, OCSPSignBurst),
		perSource: perSource}
	for _, h := range ocspHashes {
		name, key := h.New(), h.New()
		name.Write(ca.RawSubject)
		key.Write(bits)
		r.issuerHashes[h] = [2][]byte{name.Sum(nil), key.Sum(nil)}
	}
	return r, nil
}

// OCSP answers one DER OCSP request (RFC 6960, RFC 5019): good or revoked,
// signed by the CA key itself, from the cache when it can. A request for a
// certificate this CA did not issue gets the unsigned unauthorized response
// (RFC 6960 §2.3), a request with more than one CertID malformedRequest.
func (c *CA) OCSP(ctx context.Context, der []byte) []byte {
	return c.ocspAnswer(ctx, der).der
}

func (c *CA) ocspAnswer(ctx context.Context, der []byte) ocspAnswer {
	id, err := parseOCSPRequest(der)
	if err != nil {
		return unsigned(ocsp.MalformedRequestErrorResponse)
	}
	want := c.ocsp.issuerHashes[id.hash]
	if !bytes.Equal(id.nameHash, want[0]) || !bytes.Equal(id.keyHash, want[1]) || id.serial.Sign() <= 0 {
		return unsigned(ocsp.UnauthorizedErrorResponse)
	}
	serial := id.serial.Text(16)
	key := ocspKey{hash: id.hash, serial: serial}
	rec, err := c.cfg.Store.Certificate(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound), err == nil && (rec.Issuer != c.cfg.Name || rec.Status == store.CertLintFailed):
		// Not issued by this CA (a lint failure signed nothing): RFC 6960
		// §2.3 unauthorized, which costs no signature.
		return unsigned(ocsp.UnauthorizedErrorResponse)
	case err != nil:
		// The database is away (a restart, a failover): nothing can be
		// revoked meanwhile, and an answer signed before is served until
		// its refresh point, as a cache in front would serve it (a
		// revocation recorded just before the outage is answered once
		// the database is back: deploy.md says so). Any
		// other failure (a deadline, a full pool) is no reason to think
		// nothing changed: tryLater.
		if a, ok := c.ocsp.cache.Peek(key); ok && errors.Is(err, store.ErrUnavailable) && c.cfg.Now().Before(a.refresh) {
			return a
		}
		c.statusUnavailable("ocsp", err)
		return unsigned(ocsp.TryLaterErrorResponse)
	}
	tmpl := ocsp.Response{SerialNumber: id.serial, IssuerHash: id.hash, Status: ocsp.Good}
	switch {
	case rec.Revoked():
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, rec.RevokedAt, rec.RevocationReason
	case rec.Status == store.CertIntent:
		// Being issued (signed perhaps, not yet recorded nor delivered):
		// "revoked" now and "good" once recorded would be a revocation
		// that undoes itself (RFC 6960 §2.2: revoked is for good). Ask
		// again: it is recorded in a moment, or, after a crash, revoked
		// by the sweep (RevokeStaleIntents), and answered so from then.
		return unsigned(ocsp.TryLaterErrorResponse)
	}
	// Times go out with one-second precision; the state compares them so.
	tmpl.RevokedAt = tmpl.RevokedAt.Truncate(time.Second)
	state := fmt.Sprintf("%d/%d/%d", tmpl.Status, tmpl.RevokedAt.Unix(), tmpl.RevocationReason)
	if a, ok := c.ocsp.lookup(key, state, c.cfg.Now()); ok && !c.cfg.noOCSPCache {
		return a
	}
	// Concurrent first requests for one certificate sign once.
	v, _, _ := c.ocsp.flight.Do(fmt.Sprintf("%d/%s/%s", id.hash, serial, state), func() (any, error) {
		now := c.cfg.Now()
		if a, ok := c.ocsp.lookup(key, state, now); ok && !c.cfg.noOCSPCache {
			return a, nil
		}
		if source, _ := ctx.Value(ocspSourceKey{}).(string); !c.ocsp.allowSign(source) {
			// Past the budget: an answer of the same state still before
			// its nextUpdate is true and valid, only older than the
			// refresh point; else tryLater.
			if a, ok := c.ocsp.cache.Peek(key); ok && a.state == state && now.Before(a.nextUpdate) {
				return a, nil
			}
			if c.cfg.OCSPTryLater != nil {
				c.cfg.OCSPTryLater()
			}
			return unsigned(ocsp.TryLaterErrorResponse), nil
		}
		a, err := c.signOCSP(tmpl, state, now)
		if err != nil {
			c.statusUnavailable("ocsp", err)
			return unsigned(ocsp.InternalErrorErrorResponse), nil
		}
		c.ocsp.keep(key, a, now)
		return a, nil
	})
	return v.(ocspAnswer)
}

// signOCSP signs one response. thisUpdate is backdated for lagging clocks,
// but a revoked answer's is its revocation time when that is later (so it
// is later than any good answer's, and a cache revalidating with
// If-Modified-Since, thisUpdate being Last-Modified, gets the change), and
// never ahead of this signer's clock (RFC 6960 §4.2.2.1): a revocation
// another replica's clock recorded ahead is reported at now.
func (c *CA) signOCSP(tmpl ocsp.Response, state string, now time.Time) (ocspAnswer, error) {
	now = now.Truncate(time.Second)
	tmpl.ThisUpdate = now.Add(-ocspBackdate)
	if tmpl.Status == ocsp.Revoked {
		tmpl.RevokedAt = tmpl.RevokedAt.Truncate(time.Second)
		if tmpl.RevokedAt.After(now) {
			tmpl.RevokedAt = now
		}
		if tmpl.RevokedAt.After(tmpl.ThisUpdate) {
			tmpl.ThisUpdate = tmpl.RevokedAt
		}
	}
	tmpl.NextUpdate = tmpl.ThisUpdate.Add(ocspLife)
	der, err := createOCSPResponse(c.cfg.Chain[0], tmpl, now, c.cfg.Signer)
	if err != nil {
		return ocspAnswer{}, err
	}
	sum := sha256.Sum256(der)
	return ocspAnswer{
		der: der, state: state, thisUpdate: tmpl.ThisUpdate, nextUpdate: tmpl.NextUpdate,
		refresh: tmpl.ThisUpdate.Add(ocspRefresh), etag: `"` + hex.EncodeToString(sum[:16]) + `"`,
	}, nil
}

// lookup returns the cached response for key if it reports state and its
// refresh point has not come.
func (r *ocspResponder) lookup(key ocspKey, state string, now time.Time) (ocspAnswer, bool) {
	a, ok := r.cache.Get(key)
	return a, ok && a.state == state && now.Before(a.refresh)
}

// keep caches a signed answer; a full cache drops its least recently used
// answer for it.
func (r *ocspResponder) keep(key ocspKey, a ocspAnswer, _ time.Time) {
	r.cache.Add(key, a)
}

func (r *ocspResponder) len() int { return r.cache.Len() }

// publicKeyBits is the subjectPublicKey BIT STRING of a certificate: what
// an OCSP issuerKeyHash covers.
func publicKeyBits(c *x509.Certificate) ([]byte, error) {
	var info struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &info); err != nil {
		return nil, err
	}
	return info.PublicKey.Bytes, nil
}
