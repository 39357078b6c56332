package hsmsim

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"
)

// Status lifetimes: OCSP responses are good for 4 hours, CRLs for 24 hours
// (Common Policy §4.9.7 allows up to 48).
const (
	ocspValidity = 4 * time.Hour
	crlValidity  = 24 * time.Hour
	maxOCSPBody  = 16 << 10
)

// Handler serves the simulated issuers' OCSP responder (RFC 6960: POST, and
// GET with the base64 request in the path), CRLs and CA certificates. It
// reads the environment's state on every request, so revocations made by
// another process show at once.
func (e *Env) Handler(log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+ocspPath(), func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxOCSPBody+1))
		if err != nil || len(body) > maxOCSPBody {
			http.Error(w, "OCSP request too large or unreadable", http.StatusBadRequest)
			return
		}
		e.serveOCSP(w, body, log)
	})
	mux.HandleFunc("GET "+ocspPath()+"/{req...}", func(w http.ResponseWriter, r *http.Request) {
		// RFC 6960 App. A.1: GET {url}/{url-encoding of base-64 encoding of
		// the DER OCSPRequest}; the mux has already unescaped the path.
		raw := r.PathValue("req")
		der, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			der, err = base64.RawStdEncoding.DecodeString(raw)
		}
		if err != nil {
			http.Error(w, "OCSP GET: the path is not base64", http.StatusBadRequest)
			return
		}
		e.serveOCSP(w, der, log)
	})
	for _, name := range []string{trustedIssuer, untrustedIssuer} {
		is := e.issuerByName(name)
		mux.HandleFunc("GET "+crlPath(name), func(w http.ResponseWriter, r *http.Request) {
			e.serveCRL(w, is, false, log)
		})
		mux.HandleFunc("GET "+rootCRLPath(name), func(w http.ResponseWriter, r *http.Request) {
			e.serveCRL(w, is, true, log)
		})
		mux.HandleFunc("GET "+p7cPath(name), func(w http.ResponseWriter, r *http.Request) {
			b, err := certsOnlyP7C(is.ca)
			if err != nil {
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/pkcs7-mime")
			w.Write(b)
		})
		mux.HandleFunc("GET "+caCertPath(name), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Write(is.ca.Raw)
		})
		mux.HandleFunc("GET "+rootCertPath(name), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/pkix-cert")
			w.Write(is.root.Raw)
		})
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	return mux
}

func (e *Env) serveOCSP(w http.ResponseWriter, der []byte, log *slog.Logger) {
	writeResp := func(b []byte) {
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(b)
	}
	req, err := ocsp.ParseRequest(der)
	if err != nil {
		writeResp(ocsp.MalformedRequestErrorResponse)
		return
	}
	is := e.issuerForRequest(req)
	if is == nil {
		writeResp(ocsp.UnauthorizedErrorResponse)
		return
	}
	st, err := e.sharedState()
	if err != nil {
		log.Error("hsm-sim: read state", "err", err)
		writeResp(ocsp.InternalErrorErrorResponse)
		return
	}
	now := e.now().Truncate(time.Second)
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber,
		ThisUpdate:   now.Add(-time.Minute),
		NextUpdate:   now.Add(ocspValidity),
		Status:       ocsp.Unknown,
		IssuerHash:   req.HashAlgorithm,
	}
	if rec := st.Certs[is.name][req.SerialNumber.Text(16)]; rec != nil {
		tmpl.Status = ocsp.Good
		if rec.RevokedAt != nil {
			tmpl.Status = ocsp.Revoked
			tmpl.RevokedAt = *rec.RevokedAt
			tmpl.RevocationReason = rec.Reason
		}
	}
	resp, err := ocsp.CreateResponse(is.ca, is.ca, tmpl, is.caKey)
	if err != nil {
		log.Error("hsm-sim: sign OCSP response", "err", err)
		writeResp(ocsp.InternalErrorErrorResponse)
		return
	}
	log.Info("hsm-sim: OCSP", "issuer", is.name, "serial", req.SerialNumber.Text(16), "status", statusName(tmpl.Status))
	writeResp(resp)
}

func statusName(s int) string {
	switch s {
	case ocsp.Good:
		return "good"
	case ocsp.Revoked:
		return "revoked"
	}
	return "unknown"
}

// issuerForRequest matches the request's issuer name and key hashes.
func (e *Env) issuerForRequest(req *ocsp.Request) *issuer {
	for _, is := range []*issuer{e.trusted, e.untrusted} {
		if !req.HashAlgorithm.Available() {
			return nil
		}
		h := req.HashAlgorithm.New()
		h.Write(is.ca.RawSubject)
		nameHash := h.Sum(nil)
		h.Reset()
		h.Write(spkiBits(is.ca.RawSubjectPublicKeyInfo))
		keyHash := h.Sum(nil)
		if bytes.Equal(nameHash, req.IssuerNameHash) && bytes.Equal(keyHash, req.IssuerKeyHash) {
			return is
		}
	}
	return nil
}

// serveCRL signs a fresh CRL of the issuing CA (or, for root, of the root:
// the issuing CA is never revoked, so that one is empty).
func (e *Env) serveCRL(w http.ResponseWriter, is *issuer, root bool, log *slog.Logger) {
	st, err := e.sharedState()
	if err != nil {
		log.Error("hsm-sim: read state", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	now := e.now().Truncate(time.Second)
	tmpl := &x509.RevocationList{
		// A CRL number that grows with time needs no counter in the state.
		Number:     big.NewInt(now.Unix()),
		ThisUpdate: now,
		NextUpdate: now.Add(crlValidity),
	}
	signer, cert := is.caKey, is.ca
	if root {
		signer, cert = is.rootKey, is.root
	} else {
		for serial, rec := range st.Certs[is.name] {
			if rec.RevokedAt == nil {
				continue
			}
			n, ok := new(big.Int).SetString(serial, 16)
			if !ok {
				continue
			}
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
				SerialNumber: n, RevocationTime: *rec.RevokedAt, ReasonCode: rec.Reason,
			})
		}
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, cert, signer)
	if err != nil {
		log.Error("hsm-sim: sign CRL", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Write(der)
}

// OCSPURL, CRLURL and CACertURL are where the trusted issuer publishes.
func (e *Env) OCSPURL() string { return e.BaseURL + ocspPath() }

// CRLURL is the trusted issuing CA's CRL.
func (e *Env) CRLURL() string { return e.BaseURL + crlPath(trustedIssuer) }
