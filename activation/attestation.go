package activation

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/credgw/credgw/activation/attest"
	"github.com/credgw/credgw/issuance"
)

// Attestation is a device's attestation of one CSR's key (the format and
// the DER chain, the attestation certificate first).
type Attestation struct {
	Format string
	Chain  [][]byte
}

// Verdicts are the verified attestations of a request, by profile.
type Verdicts map[issuance.Profile]*attest.Result

// hardware tells whether p's key is attested in a hardware keystore: what
// …3.41 asks (SP 800-157r1 §3.3.2: AAL3 keys in a hardware module).
func (v Verdicts) hardware(p issuance.Profile) bool { return v[p] != nil && v[p].Hardware }

// JSON is what the store and the admin list keep: the verdict of each
// attested key ("{}" when none was attested).
func (v Verdicts) JSON() string {
	b, err := json.Marshal(v)
	if err != nil || len(v) == 0 {
		return "{}"
	}
	return string(b)
}

// Summary is the audit's one-line account.
func (v Verdicts) Summary() string {
	if len(v) == 0 {
		return "attestation=none"
	}
	var parts []string
	for p, r := range v {
		parts = append(parts, fmt.Sprintf("%s:%s/%s/locked=%t/sha256=%.16s", p, r.SecurityLevel, r.VerifiedBootState, r.DeviceLocked, r.CertificateSHA256))
	}
	sort.Strings(parts)
	return "attestation=" + strings.Join(parts, ",")
}

// verifyAttestations checks each attestation against its CSR's key and the
// challenge; with attestation.unattested: refuse, every device key must be
// attested. A refusal says which key and why, and changes nothing.
func (s *Service) verifyAttestations(atts map[issuance.Profile]Attestation, csrs map[issuance.Profile]*x509.CertificateRequest,
	challenge []byte) (Verdicts, error) {
	out := Verdicts{}
	for p, a := range atts {
		csr := csrs[p]
		if csr == nil {
			return nil, invalid("an attestation for %s, which has no CSR", p)
		}
		if s.cfg.Attest == nil {
			return nil, invalid("this gateway verifies no key attestation: send the %s CSR without one", p)
		}
		res, err := s.cfg.Attest.Verify(a.Format, a.Chain, csr.PublicKey, challenge)
		var ae *attest.Error
		switch {
		case errors.Is(err, attest.ErrStatusUnavailable):
			return nil, err // Unavailable: the operator's to fix, the device's to retry
		case errors.As(err, &ae):
			switch ae.Reason {
			case attest.ReasonMalformed, attest.ReasonKeyMismatch, attest.ReasonFormat:
				return nil, invalid("the %s key's %s", p, ae.Error())
			}
			return nil, denied("the %s key's %s", p, ae.Error())
		case err != nil:
			return nil, err
		}
		out[p] = res
	}
	if s.cfg.RefuseUnattested {
		for p := range csrs {
			if out[p] == nil {
				return nil, denied("this gateway issues only to devices that attest their keys: the %s key has no attestation", p)
			}
		}
	}
	return out, nil
}
