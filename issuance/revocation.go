package issuance

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/credgw/credgw/store"
	"github.com/smallstep/pkcs7"
	"golang.org/x/crypto/ocsp"
)

// CRL timing (Common Policy §4.9.7: issue at least every 18 hours, nextUpdate
// at most 48 hours ahead).
const (
	crlRefresh  = 18 * time.Hour
	crlLifetime = 24 * time.Hour
	ocspLife    = 4 * time.Hour
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
		return fmt.Errorf("%w: serial %s is from issuer %s", ErrNotIssued, serial, rec.Issuer)
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
	return c.cfg.Store.MarkCRLStale(ctx, rec.Issuer)
}

// RevokeStaleIntents revokes the intents older than olderThan that were
// never recorded as issued: a crash between signing and recording may have
// made a certificate, so it goes on the CRL (OCSP already calls it revoked).
func (c *CA) RevokeStaleIntents(ctx context.Context, olderThan time.Time) (int, error) {
	n, err := c.cfg.Store.RevokeStaleIntents(ctx, c.cfg.Name, olderThan, c.cfg.Now())
	if err != nil || n == 0 {
		return n, err
	}
	return n, c.cfg.Store.MarkCRLStale(ctx, c.cfg.Name)
}

// crlLease is how long a replica holds the right to rebuild the CRL.
const crlLease = 30 * time.Second

// CRL returns the current DER CRL. It is shared by every replica through
// the store: when something was revoked, when it is 18 hours old, or on
// force, one replica claims the rebuild (a lease) and the others serve the
// stored CRL meanwhile — the CRL number grows once per rebuild, not once per
// replica.
func (c *CA) CRL(ctx context.Context, force bool) ([]byte, error) {
	now := c.cfg.Now()
	cur, err := c.cfg.Store.CRL(ctx, c.cfg.Name)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	have := err == nil
	if have && !force && !cur.Stale && now.Sub(cur.ThisUpdate) < crlRefresh {
		return cur.DER, nil
	}
	claimed, gen, err := c.cfg.Store.ClaimCRL(ctx, c.cfg.Name, now, crlLease)
	if err != nil {
		return nil, err
	}
	if claimed && !force {
		// Another replica may have rebuilt between our read and our claim.
		if again, err := c.cfg.Store.CRL(ctx, c.cfg.Name); err == nil && !again.Stale && now.Sub(again.ThisUpdate) < crlRefresh {
			return again.DER, c.cfg.Store.ReleaseCRL(ctx, c.cfg.Name)
		}
	}
	if !claimed {
		// Another replica is rebuilding; serve the current CRL while it is
		// within its nextUpdate.
		if have && now.Before(cur.NextUpdate) {
			return cur.DER, nil
		}
		return nil, fmt.Errorf("%w: the CRL is being built; retry", ErrCRLUnavailable)
	}
	entries, err := c.cfg.Store.RevokedCertificates(ctx, c.cfg.Name)
	if err != nil {
		return nil, err
	}
	number, err := c.cfg.Store.NextCRLNumber(ctx, c.cfg.Name)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: now.Add(-time.Minute).Truncate(time.Second),
		NextUpdate: now.Add(crlLifetime).Truncate(time.Second),
	}
	for _, e := range entries {
		n, ok := new(big.Int).SetString(e.Serial, 16)
		if !ok {
			continue
		}
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: n, RevocationTime: e.RevokedAt, ReasonCode: e.Reason,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, c.cfg.Chain[0], c.cfg.Signer)
	if err != nil {
		return nil, fmt.Errorf("issuance: sign CRL: %w", err)
	}
	if err := c.cfg.Store.SaveCRL(ctx, c.cfg.Name, store.StoredCRL{Number: number, DER: der, ThisUpdate: tmpl.ThisUpdate, NextUpdate: tmpl.NextUpdate}, gen); err != nil {
		return nil, err
	}
	return der, nil
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

// OCSP answers one DER OCSP request (RFC 6960): good, revoked or unknown,
// signed by the CA key itself.
func (c *CA) OCSP(ctx context.Context, der []byte) []byte {
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		return ocsp.MalformedRequestErrorResponse
	}
	ca := c.cfg.Chain[0]
	if !req.HashAlgorithm.Available() {
		return ocsp.MalformedRequestErrorResponse
	}
	h := req.HashAlgorithm.New()
	h.Write(ca.RawSubject)
	nameHash := h.Sum(nil)
	h.Reset()
	bits, err := publicKeyBits(ca)
	if err != nil {
		return ocsp.InternalErrorErrorResponse
	}
	h.Write(bits)
	keyID := h.Sum(nil)
	if !bytes.Equal(nameHash, req.IssuerNameHash) || !bytes.Equal(keyID, req.IssuerKeyHash) {
		return ocsp.UnauthorizedErrorResponse
	}
	now := c.cfg.Now().Truncate(time.Second)
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber, Status: ocsp.Unknown, IssuerHash: req.HashAlgorithm,
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(ocspLife),
	}
	rec, err := c.cfg.Store.Certificate(ctx, req.SerialNumber.Text(16))
	switch {
	case errors.Is(err, store.ErrNotFound), err == nil && (rec.Issuer != c.cfg.Name || rec.Status == store.CertLintFailed):
	case err != nil:
		return ocsp.TryLaterErrorResponse
	case rec.Revoked():
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, rec.RevokedAt, rec.RevocationReason
	case rec.Status == store.CertIntent:
		// Signed perhaps, never recorded nor delivered: RFC 6960 §2.2 lets
		// a responder call a non-issued certificate revoked.
		tmpl.Status, tmpl.RevokedAt, tmpl.RevocationReason = ocsp.Revoked, rec.CreatedAt, ocsp.Unspecified
	default:
		tmpl.Status = ocsp.Good
	}
	resp, err := ocsp.CreateResponse(ca, ca, tmpl, c.cfg.Signer)
	if err != nil {
		return ocsp.InternalErrorErrorResponse
	}
	return resp
}

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

// Handler serves, on the plain-HTTP listener, what the certificates point
// at: the CRL (CRL DP), the OCSP responder (AIA, GET and POST) and the CA
// certificate as a certs-only PKCS#7 (caIssuers) and as DER.
func (c *CA) Handler() http.Handler {
	mux := http.NewServeMux()
	name := c.cfg.Name
	mux.HandleFunc("GET /crl/"+name+".crl", func(w http.ResponseWriter, r *http.Request) {
		der, err := c.CRL(r.Context(), false)
		if err != nil {
			http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/pkix-crl")
		w.Write(der)
	})
	ocspReply := func(w http.ResponseWriter, r *http.Request, der []byte) {
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(c.OCSP(r.Context(), der))
	}
	mux.HandleFunc("POST /ocsp/"+name, func(w http.ResponseWriter, r *http.Request) {
		der, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPReq+1))
		if err != nil || len(der) > maxOCSPReq {
			http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
			return
		}
		ocspReply(w, r, der)
	})
	mux.HandleFunc("GET /ocsp/"+name+"/{req...}", func(w http.ResponseWriter, r *http.Request) {
		raw := r.PathValue("req")
		der, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			der, err = base64.RawStdEncoding.DecodeString(raw)
		}
		if err != nil {
			http.Error(w, "OCSP GET: the path is not base64", http.StatusBadRequest)
			return
		}
		ocspReply(w, r, der)
	})
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
	return mux
}
