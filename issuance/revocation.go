package issuance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/credgw/credgw/store"
	"github.com/smallstep/pkcs7"
)

// CRL timing (Common Policy §4.9.7: issue at least every 18 hours, nextUpdate
// at most 48 hours ahead).
const (
	crlRefresh  = 18 * time.Hour
	crlLifetime = 24 * time.Hour
	// crlBackdate backdates thisUpdate for relying parties whose clocks
	// lag, never to before a revocation the CRL lists.
	crlBackdate = time.Minute
	maxOCSPReq  = 16 << 10
)

// ErrNotIssued means no certificate has that serial.
var ErrNotIssued = errors.New("issuance: no such certificate")

// ErrAlreadyRevoked means the certificate was revoked before.
var ErrAlreadyRevoked = errors.New("issuance: certificate already revoked")

// Revoke revokes a certificate, or the intent a crash left between sign and
// record, with an RFC 5280 reason code. The CRL is rebuilt on the next fetch.
func (c *CA) Revoke(ctx context.Context, serial string, reason RevocationReason) error {
	serial = strings.ToLower(strings.TrimLeft(strings.ReplaceAll(serial, ":", ""), "0"))
	if serial == "" {
		return fmt.Errorf("%w: empty serial", ErrNotIssued)
	}
	if !reason.EndEntity() {
		return fmt.Errorf("%w: revocation reason %d is not allowed for end-entity certificates", ErrBadRequest, int(reason))
	}
	if rec, err := c.cfg.Store.Certificate(ctx, serial); err == nil && rec.Issuer != c.cfg.Name {
		// A certificate of an earlier key: its retired CA lists it.
		for _, r := range c.cfg.Retired {
			if r.cfg.Name == rec.Issuer {
				return r.Revoke(ctx, serial, reason)
			}
		}
		return fmt.Errorf("%w: serial %s was issued under the CA name %q: list the key that issued it under ca.retired with that name (docs/key-ceremony.md)", ErrOtherIssuer, serial, rec.Issuer)
	}
	rec, err := c.cfg.Store.RevokeCertificate(ctx, serial, int(reason), c.cfg.Now())
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: serial %s", ErrNotIssued, serial)
	case errors.Is(err, store.ErrAlreadyUsed):
		return fmt.Errorf("%w: serial %s at %s", ErrAlreadyRevoked, serial, rec.RevokedAt.Format(time.RFC3339))
	case err != nil:
		return err
	}
	return nil // the store made the CRL stale with the revocation
}

// RevokeStaleIntents revokes the intents older than olderThan that were
// never recorded as issued: a crash between signing and recording may have
// made a certificate, so it goes on the CRL (OCSP already calls it revoked).
func (c *CA) RevokeStaleIntents(ctx context.Context, olderThan time.Time) (int, error) {
	// The store makes the CRL stale in the same transaction.
	return c.cfg.Store.RevokeStaleIntents(ctx, c.cfg.Name, olderThan, c.cfg.Now())
}

// crlLease is how long a replica holds the right to rebuild the CRL.
const crlLease = 30 * time.Second

// CRL returns the current DER CRL. It is shared by every replica through
// the store: when something was revoked, when it is 18 hours old, or on
// force, one replica claims the rebuild (a lease) and the others serve the
// stored CRL meanwhile — the CRL number grows once per rebuild, not once per
// replica.
func (c *CA) CRL(ctx context.Context, force bool) ([]byte, error) {
	cur, err := c.currentCRL(ctx, force)
	return cur.DER, err
}

// RetiredCRLs keeps the retired CAs' CRLs (Config.Retired) as CRL keeps
// this one's, so that each is issued on schedule without a fetch; the
// error names each that failed.
func (c *CA) RetiredCRLs(ctx context.Context, force bool) error {
	var errs []error
	for _, r := range c.cfg.Retired {
		if _, err := r.currentCRL(ctx, force); err != nil {
			errs = append(errs, fmt.Errorf("the CRL of retired CA %s: %w", r.cfg.Name, err))
		}
	}
	return errors.Join(errs...)
}

// currentCRL is CRL with its number and dates (the HTTP caching headers).
// While the store is away (a database restart, a failover) the last CRL
// served is served again until its nextUpdate: nothing can be revoked
// meanwhile (a revocation recorded just before, not read yet, is published
// once the database is back, as relying parties' own caches would lag),
// and relying parties that fail closed would otherwise refuse every
// credential. A forced rebuild gets the error.
//
// Only then: a rebuild that fails with the database up (the CA key away
// after a revocation) is an error, never the CRL without the revocation.
func (c *CA) currentCRL(ctx context.Context, force bool) (store.StoredCRL, error) {
	cur, err := c.storedCRL(ctx, force)
	if err == nil {
		c.lastCRL.Store(&cur)
		return cur, nil
	}
	if last := c.lastCRL.Load(); !force && errors.Is(err, errStoreAway) && last != nil && c.cfg.Now().Before(last.NextUpdate) {
		return *last, nil
	}
	return cur, err
}

// errStoreAway marks the store's first read of the CRL failing because the
// database is unreachable: nothing can be revoked meanwhile.
var errStoreAway = errors.New("issuance: the store is unreachable")

// readCRL is the stored CRL: its state (a small read), and its DER from
// memory when this replica holds the CRL of that number (a CRL is
// megabytes, and anyone may fetch it), else from the store.
func (c *CA) readCRL(ctx context.Context) (store.StoredCRL, error) {
	st, err := c.cfg.Store.CRLState(ctx, c.cfg.Name)
	if err != nil {
		return st, err
	}
	if last := c.lastCRL.Load(); last != nil && last.Number == st.Number && st.Number != 0 {
		st.DER = last.DER
		return st, nil
	}
	return c.cfg.Store.CRL(ctx, c.cfg.Name)
}

// storedCRL is the CRL in the store, rebuilt when due.
func (c *CA) storedCRL(ctx context.Context, force bool) (store.StoredCRL, error) {
	now := c.cfg.Now()
	cur, err := c.readCRL(ctx)
	if errors.Is(err, store.ErrUnavailable) {
		return store.StoredCRL{}, fmt.Errorf("%w: %w", errStoreAway, err)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.StoredCRL{}, err
	}
	have := err == nil
	if have && !c.ownCRL(cur) {
		// Another key's (a re-key that kept the name, put right since):
		// never served, made again.
		cur.Stale = true
	}
	if have && !force && !cur.Stale && now.Sub(cur.ThisUpdate) < crlRefresh {
		return cur, nil
	}
	claimed, gen, err := c.cfg.Store.ClaimCRL(ctx, c.cfg.Name, now, crlLease)
	if err != nil {
		return store.StoredCRL{}, err
	}
	if claimed && !force {
		// Another replica may have rebuilt between our read and our claim.
		if again, err := c.readCRL(ctx); err == nil && !again.Stale && now.Sub(again.ThisUpdate) < crlRefresh && c.ownCRL(again) {
			return again, c.cfg.Store.ReleaseCRL(ctx, c.cfg.Name, now.Add(crlLease))
		}
	}
	if !claimed {
		// Another replica is rebuilding. A CRL only due for its refresh
		// is true until its nextUpdate: served. A stale one lacks a
		// revocation: wait for the rebuild (a failing one gives its claim
		// back, and the next fetch tries itself), never serve it.
		if have && !cur.Stale && now.Before(cur.NextUpdate) {
			return cur, nil
		}
		return c.awaitRebuild(ctx)
	}
	var listedAfter time.Time // when the CRL before was made, if any
	if have {
		// No later than this CRL's own thisUpdate: a replica whose clock
		// ran ahead dated the CRL before in the future, and entries that
		// expired between the two dates were not listed after expiry.
		listedAfter = cur.ThisUpdate
		if own := now.Add(-crlBackdate).Truncate(time.Second); own.Before(listedAfter) {
			listedAfter = own
		}
		// And a replica whose clock runs slow records a revocation
		// made after that CRL at a time before it: such an entry was
		// never listed. Entries go replicaSkew later than they could.
		listedAfter = listedAfter.Add(-replicaSkew)
	}
	built, err := c.buildCRL(ctx, now, gen, listedAfter)
	if err == nil {
		return built, nil
	}
	// A rebuild that failed (the CA key away) gives its claim back: the
	// other replicas, which serve the stored CRL while one is claimed,
	// must not serve one that lacks a revocation for the lease's 30 s.
	if rerr := c.cfg.Store.ReleaseCRL(context.WithoutCancel(ctx), c.cfg.Name, now.Add(crlLease)); rerr != nil {
		err = errors.Join(err, rerr)
	}
	// A CRL only due for its refresh (nothing revoked since) is still true
	// until its nextUpdate.
	if have && !force && !cur.Stale && now.Before(cur.NextUpdate) {
		return cur, nil
	}
	return store.StoredCRL{}, err
}

// ownCRL reports whether a stored CRL is this CA's: issued under its name
// and signed by its key. One verification per CRL number.
func (c *CA) ownCRL(cur store.StoredCRL) bool {
	if c.ownCRLNumber.Load() == cur.Number && cur.Number != 0 {
		return true
	}
	crl, err := x509.ParseRevocationList(cur.DER)
	if err != nil || !bytes.Equal(crl.RawIssuer, c.cfg.Chain[0].RawSubject) || crl.CheckSignatureFrom(c.cfg.Chain[0]) != nil {
		return false
	}
	c.ownCRLNumber.Store(cur.Number)
	return true
}

// replicaSkew is how far apart the replicas' clocks may be for a
// revocation after a certificate's expiry to reach a CRL.
const replicaSkew = time.Hour

// crlWait bounds how long a fetch waits for another replica's rebuild.
const crlWait = 5 * time.Second

// awaitRebuild waits for the CRL another replica is rebuilding, up to
// crlWait (and the request's deadline); then says to retry.
func (c *CA) awaitRebuild(ctx context.Context) (store.StoredCRL, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(crlWait)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return store.StoredCRL{}, fmt.Errorf("%w: the CRL is being built; retry", ErrCRLUnavailable)
		case <-deadline.C:
			return store.StoredCRL{}, fmt.Errorf("%w: the CRL is being built; retry", ErrCRLUnavailable)
		case <-t.C:
		}
		// The state only (no DER) until the rebuild is there.
		if st, err := c.cfg.Store.CRLState(ctx, c.cfg.Name); err != nil || st.Stale || !c.cfg.Now().Before(st.NextUpdate) {
			continue
		}
		if cur, err := c.readCRL(ctx); err == nil && !cur.Stale && c.cfg.Now().Before(cur.NextUpdate) && c.ownCRL(cur) {
			return cur, nil
		}
	}
}

// buildCRL signs and stores a CRL of the revocations now (storedCRL holds
// the claim). listedAfter is the thisUpdate of the CRL before it (zero if
// none): an entry whose certificate expired and was revoked before then
// was listed by a CRL issued after its expiry, and goes (RFC 5280 §5).
func (c *CA) buildCRL(ctx context.Context, now time.Time, gen int64, listedAfter time.Time) (store.StoredCRL, error) {
	// An entry goes once a CRL issued after its certificate's expiry
	// listed it (RFC 5280 §5): the CRL before this one, if it was made
	// after the expiry. (It listed every entry not dropped before it,
	// each of which a CRL after its expiry had listed, by the same rule.)
	entries, err := c.cfg.Store.RevokedCertificates(ctx, c.cfg.Name, listedAfter)
	if err != nil {
		return store.StoredCRL{}, err
	}
	// The number is at least the time in milliseconds: it grows with
	// every rebuild and over a restore of the database from a backup
	// (RFC 5280 §5.2.3), within 20 octets for 10^36 years.
	number, err := c.cfg.Store.NextCRLNumber(ctx, c.cfg.Name, now.UnixMilli())
	if err != nil {
		return store.StoredCRL{}, err
	}
	// thisUpdate is backdated for relying parties whose clocks lag, and
	// never ahead of this signer's clock, whatever time another replica
	// recorded a revocation at (RFC 6960 §4.2.2.1 and OpenSSL's "not yet
	// valid" for CRLs too). Times go out with one-second precision, so
	// they are truncated before they compare.
	thisUpdate := now.Add(-crlBackdate).Truncate(time.Second)
	tmpl := &x509.RevocationList{Number: big.NewInt(number)}
	for _, e := range entries {
		n, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			continue
		}
		// RFC 5280 §5.1.2.4, §5.3.2 and zlint
		// e_crl_revocation_time_after_this_update: no revocation listed
		// later than thisUpdate. One recorded in the backdated minute, or
		// by a replica whose clock runs ahead, is listed at thisUpdate
		// (earlier, never later, than it happened).
		at := e.RevokedAt.Truncate(time.Second)
		if at.After(thisUpdate) {
			at = thisUpdate
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: n, RevocationTime: at, ReasonCode: e.Reason,
		})
	}
	tmpl.ThisUpdate, tmpl.NextUpdate = thisUpdate, thisUpdate.Add(crlLifetime)
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.cfg.Chain[0], c.cfg.Signer)
	if err != nil {
		return store.StoredCRL{}, fmt.Errorf("issuance: sign CRL: %w", err)
	}
	if c.cfg.afterCRL != nil {
		c.cfg.afterCRL(der)
	}
	built := store.StoredCRL{Number: number, DER: der, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate}
	if err := c.cfg.Store.SaveCRL(ctx, c.cfg.Name, built, gen); err != nil {
		return store.StoredCRL{}, err
	}
	return built, nil
}

// ErrCRLUnavailable means no CRL can be served right now.
var ErrCRLUnavailable = errors.New("issuance: CRL unavailable")

// CRLInfo describes the stored CRL.
func (c *CA) CRLInfo(ctx context.Context) (number int64, thisUpdate, nextUpdate time.Time) {
	cur, err := c.cfg.Store.CRL(ctx, c.cfg.Name)
	if err != nil {
		return 0, time.Time{}, time.Time{}
	}
	return cur.Number, cur.ThisUpdate, cur.NextUpdate
}

// Handler serves, on the plain-HTTP listener, what the certificates point
// at: the CRL (CRL DP), the OCSP responder (AIA, RFC 5019 GET and POST) and
// the CA certificate as a certs-only PKCS#7 (caIssuers) and as DER. CRLs
// and OCSP GET answers carry HTTP caching headers (see http.go).
//
// OCSP is routed before the mux: a base64 request may hold "//", which
// http.ServeMux would "clean" with a redirect.
func (c *CA) Handler() http.Handler {
	own := c.handler()
	if len(c.cfg.Retired) == 0 {
		return own
	}
	retired := make(map[string]http.Handler, len(c.cfg.Retired))
	for _, r := range c.cfg.Retired {
		retired[r.cfg.Name] = r.handler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := retired[urlName(r.URL.Path)]; h != nil {
			h.ServeHTTP(w, r)
			return
		}
		own.ServeHTTP(w, r)
	})
}

// RetiredCertificates are the CA certificates of the retired CAs
// (Config.Retired).
func (c *CA) RetiredCertificates() []*x509.Certificate {
	var out []*x509.Certificate
	for _, r := range c.cfg.Retired {
		out = append(out, r.cfg.Chain[0])
	}
	return out
}

// urlName is the CA name a status or certificate path names
// (/ocsp/NAME…, /crl/NAME.crl, /ca/NAME.p7c, /ca/NAME.crt), or "".
func urlName(p string) string {
	switch {
	case strings.HasPrefix(p, "/ocsp/"):
		name, _, _ := strings.Cut(strings.TrimPrefix(p, "/ocsp/"), "/")
		return name
	case strings.HasPrefix(p, "/crl/"):
		return strings.TrimSuffix(strings.TrimPrefix(p, "/crl/"), ".crl")
	case strings.HasPrefix(p, "/ca/"):
		n := strings.TrimPrefix(p, "/ca/")
		if b, ok := strings.CutSuffix(n, ".p7c"); ok {
			return b
		}
		return strings.TrimSuffix(n, ".crt")
	}
	return ""
}

// handler is Handler for this CA's own URLs.
func (c *CA) handler() http.Handler {
	mux := http.NewServeMux()
	name := c.cfg.Name
	mux.HandleFunc("GET /crl/"+name+".crl", c.serveCRL)
	p7c, p7cErr := pkcs7.DegenerateCertificate(c.cfg.Chain[0].Raw)
	mux.HandleFunc("GET /ca/"+name+".p7c", func(w http.ResponseWriter, r *http.Request) {
		if p7cErr != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/pkcs7-mime")
		w.Write(p7c)
	})
	mux.HandleFunc("GET /ca/"+name+".crt", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/pkix-cert")
		w.Write(c.cfg.Chain[0].Raw)
	})
	ocspPath := "/ocsp/" + name
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == ocspPath || strings.HasPrefix(p, ocspPath+"/") {
			c.serveOCSP(w, r, ocspPath)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// CheckIssuers compares the store's unexpired certificates with the keys
// that answer for them (this CA and Config.Retired, by name) and describes
// each problem, for serve to log as an error: an issuer name whose
// certificates (its oldest or newest) another key signed than the one
// configured under it (a re-key that kept ca.name: their OCSP and CRL are
// answered by a key that did not issue them), an issuer no configured key
// answers for (a re-key that left out ca.retired: no status, no
// revocation), or a certificate that does not parse. err is the store's.
func (c *CA) CheckIssuers(ctx context.Context) (problems []string, err error) {
	cas := map[string]*x509.Certificate{}
	for _, r := range c.cfg.Retired {
		cas[r.cfg.Name] = r.cfg.Chain[0]
	}
	cas[c.cfg.Name] = c.cfg.Chain[0]
	return CheckIssuers(ctx, c.cfg.Store, c.cfg.Now(), cas)
}

// IssuerLister is what CheckIssuers reads of the store.
type IssuerLister interface {
	LiveIssuers(ctx context.Context, now time.Time) ([]store.LiveIssuer, error)
}

// CheckIssuers is CA.CheckIssuers for the CA certificates configured by
// name (ca.name and ca.retired), without their keys: config check runs it
// before a restart.
func CheckIssuers(ctx context.Context, st IssuerLister, now time.Time, cas map[string]*x509.Certificate) (problems []string, err error) {
	live, err := st.LiveIssuers(ctx, now)
	if err != nil {
		return nil, err
	}
	for _, l := range live {
		caCert, ok := cas[l.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%d unexpired certificates of issuer %q, which no configured key answers for: they get no OCSP or CRL and cannot be revoked; list the key that issued them under ca.retired with name %q (docs/key-ceremony.md)",
				l.Count, l.Name, l.Name))
			continue
		}
		for _, der := range [][]byte{l.Oldest, l.Newest} {
			cert, perr := x509.ParseCertificate(der)
			if perr != nil {
				problems = append(problems, fmt.Sprintf("a certificate of issuer %q in the store does not parse: %v", l.Name, perr))
				break
			}
			if cert.CheckSignatureFrom(caCert) != nil {
				problems = append(problems, fmt.Sprintf("unexpired certificates of issuer %q (%d in all; serial %s among them) were signed by another key than the one configured under that name: their OCSP and CRL are answered by a key that did not issue them; each key answers under its own name: a re-keyed CA takes a new ca.name and lists the earlier key under ca.retired with the name its certificates carry (docs/key-ceremony.md)",
					l.Name, l.Count, cert.SerialNumber.Text(16)))
				break
			}
		}
	}
	return problems, nil
}
