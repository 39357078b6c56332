package issuance

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/crypto/ocsp"
)

// serveCRL serves the current CRL with caching headers: max-age and
// Expires run to the point where credgw makes the next one on its own
// (18 h, before nextUpdate), the ETag is a digest of it, and If-None-Match
// gets 304 (http.ServeContent). No Last-Modified: two CRLs can share a
// thisUpdate second (rebuilt in one second, or by replicas whose clocks
// differ), and If-Modified-Since would then keep the older one.
func (c *CA) serveCRL(w http.ResponseWriter, r *http.Request) {
	cur, err := c.currentCRL(r.Context(), false)
	if err != nil {
		c.statusUnavailable("crl", err)
		http.Error(w, "CRL unavailable", http.StatusServiceUnavailable)
		return
	}
	refresh := cur.ThisUpdate.Add(crlRefresh)
	if cur.NextUpdate.Before(refresh) {
		refresh = cur.NextUpdate
	}
	h := w.Header()
	h.Set("Content-Type", "application/pkix-crl")
	// The ETag is the CRL's digest, not its number: a number a restored
	// database reused (before numbers followed the time) must not let a
	// cache keep another CRL.
	sum := sha256.Sum256(cur.DER)
	cacheFor(h, `"`+hex.EncodeToString(sum[:16])+`"`, refresh, c.cfg.Now())
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(cur.DER))
}

// serveOCSP is the responder at base (RFC 5019): GET base/{url-encoded
// base64 request} and POST base. Errors in the request are answered as
// OCSP says (malformedRequest, unauthorized), unsigned; only a body over
// maxOCSPReq and a wrong method get an HTTP error.
func (c *CA) serveOCSP(w http.ResponseWriter, r *http.Request, base string) {
	var der []byte
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		// The escaped path: the base64 may hold "/" and "+", and "%2F".
		raw := strings.TrimPrefix(r.URL.EscapedPath(), (&url.URL{Path: base}).EscapedPath())
		raw = strings.TrimPrefix(raw, "/")
		if s, err := url.PathUnescape(raw); err == nil {
			der, err = base64.StdEncoding.DecodeString(s)
			if err != nil {
				der, _ = base64.RawStdEncoding.DecodeString(s)
			}
		}
	case http.MethodPost:
		if r.URL.Path != base {
			http.NotFound(w, r)
			return
		}
		if r.ContentLength > maxOCSPReq {
			http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPReq+1))
		if err != nil || len(body) > maxOCSPReq {
			http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
			return
		}
		der = body
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		http.Error(w, "OCSP: GET or POST", http.StatusMethodNotAllowed)
		return
	}
	var a ocspAnswer
	if len(der) == 0 {
		a = unsigned(ocsp.MalformedRequestErrorResponse)
	} else {
		a = c.ocspAnswer(context.WithValue(r.Context(), ocspSourceKey{}, ocspSource(r.RemoteAddr)), der)
	}
	h := w.Header()
	h.Set("Content-Type", "application/ocsp-response")
	if r.Method == http.MethodPost || !a.signed() {
		// RFC 5019 §5: POST responses are not cached; unsigned errors
		// (unauthorized for a serial issued a second later) neither.
		h.Set("Cache-Control", "no-store")
		w.Write(a.der)
		return
	}
	cacheFor(h, a.etag, a.refresh, c.cfg.Now())
	r.Header.Del("Range") // an OCSP response is one piece
	// Revalidation by the ETag only: Last-Modified is thisUpdate (RFC 5019
	// §6.2), whole seconds from each replica's clock, and a revoked answer
	// may carry one no later than the good answer a cache holds.
	r.Header.Del("If-Modified-Since")
	r.Header.Del("If-Unmodified-Since")
	http.ServeContent(w, r, "", a.thisUpdate, bytes.NewReader(a.der))
}

// statusUnavailable reports a status request the CA could not answer (a
// CRL it could not serve, an OCSP answer it could not sign or read): kind
// is "crl" or "ocsp".
func (c *CA) statusUnavailable(kind string, err error) {
	if c.cfg.StatusUnavailable != nil {
		c.cfg.StatusUnavailable(kind, err)
	}
}

// cacheFor sets the RFC 5019 §6.2 caching headers of an answer good until
// refresh (at or before its nextUpdate). Last-Modified is set by
// http.ServeContent.
func cacheFor(h http.Header, etag string, refresh, now time.Time) {
	maxAge := int64(refresh.Sub(now) / time.Second)
	if maxAge < 0 {
		maxAge = 0
	}
	h.Set("Cache-Control", fmt.Sprintf("max-age=%d, public, no-transform, must-revalidate", maxAge))
	h.Set("Expires", refresh.UTC().Format(http.TimeFormat))
	h.Set("ETag", etag)
}
