package hsmsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/credgw/credgw/piv"
)

// The two simulated card issuers: the trusted one whose root credgw is
// configured with, and an untrusted one (same shape, unknown root) behind the
// "untrusted" card variant.
const (
	trustedIssuer   = "piv-ca"
	untrustedIssuer = "untrusted-ca"
)

// issuer is a root CA and a PIV card issuing CA under it, with software keys.
type issuer struct {
	name    string
	root    *x509.Certificate
	rootKey crypto.Signer
	ca      *x509.Certificate
	caKey   crypto.Signer
	baseURL string
}

// Paths the responder serves, relative to the base URL.
func ocspPath() string                 { return "/ocsp" }
func crlPath(issuerName string) string { return "/crl/" + issuerName + ".crl" }
func rootCRLPath(issuerName string) string {
	return "/crl/" + issuerName + "-root.crl"
}
func p7cPath(issuerName string) string    { return "/certs/" + issuerName + ".p7c" }
func caCertPath(issuerName string) string { return "/certs/" + issuerName + ".crt" }
func rootCertPath(issuerName string) string {
	return "/certs/" + issuerName + "-root.crt"
}

func issuerDir(dir, name string) string { return filepath.Join(dir, "issuer", name) }

// newIssuerPair makes the root and issuing CA and stores them (keys 0600).
// keySuffix is a short key-derived suffix for CA names: two environments
// never share a CA name with different keys (NSS and other certificate
// stores tell CAs apart by name).
func keySuffix(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "0000"
	}
	sum := sha1.Sum(der)
	return fmt.Sprintf("%x", sum[:2])
}

func newIssuerPair(dir, name, baseURL string) (*issuer, error) {
	d := issuerDir(dir, name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, err
	}
	org := "credgw Simulated PIV Issuer"
	if name == untrustedIssuer {
		org = "credgw Untrusted Card Issuer"
	}
	// Backdated so that certificates of the expired card variant chain at
	// any time inside their own validity.
	now := time.Now().AddDate(-3, 0, 0)
	rootKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, OrganizationalUnit: []string{org}, CommonName: org + " Root CA " + keySuffix(rootKey.Public())},
		NotBefore:             now,
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	root, err := issue(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("hsmsim: root CA: %w", err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{Country: []string{"US"}, Organization: []string{"U.S. Government"}, OrganizationalUnit: []string{org}, CommonName: org + " PIV Card Issuing CA " + keySuffix(caKey.Public())},
		NotBefore:             now,
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		// The policies a PIV card issuer is cross-certified for.
		Policies: policies(piv.PolicyCommonPolicy, piv.PolicyCommonHardware, piv.PolicyCommonAuthentication,
			piv.PolicyCommonHigh, piv.PolicyCommonCardAuth),
		IssuingCertificateURL: []string{baseURL + rootCertPath(name)},
		CRLDistributionPoints: []string{baseURL + rootCRLPath(name)},
	}
	ca, err := issue(caTmpl, root, caKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("hsmsim: issuing CA: %w", err)
	}
	is := &issuer{name: name, root: root, rootKey: rootKey, ca: ca, caKey: caKey, baseURL: baseURL}
	for file, v := range map[string]any{"root.crt": root, "root.key": rootKey, "ca.crt": ca, "ca.key": caKey} {
		if err := writePEM(filepath.Join(d, file), v); err != nil {
			return nil, err
		}
	}
	return is, nil
}

func loadIssuer(dir, name string) (*issuer, error) {
	d := issuerDir(dir, name)
	is := &issuer{name: name}
	var err error
	if is.root, err = readCert(filepath.Join(d, "root.crt")); err != nil {
		return nil, err
	}
	if is.ca, err = readCert(filepath.Join(d, "ca.crt")); err != nil {
		return nil, err
	}
	if is.rootKey, err = readKey(filepath.Join(d, "root.key")); err != nil {
		return nil, err
	}
	if is.caKey, err = readKey(filepath.Join(d, "ca.key")); err != nil {
		return nil, err
	}
	return is, nil
}

// issue signs tmpl with key as parent, filling in a random serial and the
// key identifiers.
func issue(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	skid := sha1.Sum(spkiBits(spki)) // RFC 5280 §4.2.1.2 method (1)
	tmpl.SubjectKeyId = skid[:]
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// spkiBits returns the subjectPublicKey BIT STRING contents of a DER
// SubjectPublicKeyInfo: what key identifiers and OCSP key hashes cover.
func spkiBits(spki []byte) []byte {
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil
	}
	return info.PublicKey.Bytes
}

// randomSerial is a positive serial of 127 random bits (≤ 20 octets).
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // fixed length, never zero
	return new(big.Int).SetBytes(b), nil
}

func policies(oids ...asn1.ObjectIdentifier) []x509.OID {
	out := make([]x509.OID, 0, len(oids))
	for _, o := range oids {
		ints := make([]uint64, len(o))
		for i, v := range o {
			ints[i] = uint64(v)
		}
		oid, err := x509.OIDFromInts(ints)
		if err != nil {
			panic(err) // constant OIDs
		}
		out = append(out, oid)
	}
	return out
}

func writePEM(path string, v any) error {
	var block *pem.Block
	switch x := v.(type) {
	case *x509.Certificate:
		block = &pem.Block{Type: "CERTIFICATE", Bytes: x.Raw}
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(x)
		if err != nil {
			return err
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	default:
		return fmt.Errorf("hsmsim: cannot write %T", v)
	}
	mode := os.FileMode(0o644)
	if block.Type == "PRIVATE KEY" {
		mode = 0o600
	}
	return writeFileAtomic(path, pem.EncodeToMemory(block), mode)
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hsmsim: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("hsmsim: %s holds no PEM certificate", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hsmsim: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("hsmsim: %s holds no PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("hsmsim: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("hsmsim: %s: %T is not a signing key", path, k)
	}
	return s, nil
}

// certsOnlyP7C encodes certs as a degenerate CMS SignedData (RFC 5652 §5,
// no signers), the form RFC 5280 §4.2.2.1 asks caIssuers to serve.
func certsOnlyP7C(certs ...*x509.Certificate) ([]byte, error) {
	var raw []asn1.RawValue
	for _, c := range certs {
		raw = append(raw, asn1.RawValue{FullBytes: c.Raw})
	}
	type encap struct {
		ContentType asn1.ObjectIdentifier
	}
	sd := struct {
		Version          int
		DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
		EncapContentInfo encap
		Certificates     []asn1.RawValue `asn1:"optional,tag:0,set"`
		SignerInfos      []asn1.RawValue `asn1:"set"`
	}{
		Version:          1,
		DigestAlgorithms: []pkix.AlgorithmIdentifier{},
		EncapContentInfo: encap{ContentType: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}},
		Certificates:     raw,
		SignerInfos:      []asn1.RawValue{},
	}
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue
	}{
		ContentType: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2},
		// content [0] EXPLICIT SignedData
		Content: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner},
	})
}
