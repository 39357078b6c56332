package issuance

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/credgw/credgw/pkcs11"
)

// KeyAlgorithm is a CA key type.
type KeyAlgorithm string

// CA key types: P-256 (default), P-384, RSA-3072.
const (
	CAKeyP256    KeyAlgorithm = "p256"
	CAKeyP384    KeyAlgorithm = "p384"
	CAKeyRSA3072 KeyAlgorithm = "rsa3072"
)

func (k KeyAlgorithm) pkcs11Type() (pkcs11.KeyType, error) {
	switch k {
	case "", CAKeyP256:
		return pkcs11.ECP256, nil
	case CAKeyP384:
		return pkcs11.ECP384, nil
	case CAKeyRSA3072:
		return pkcs11.RSA3072, nil
	}
	return 0, fmt.Errorf("issuance: CA key type %q: p256, p384 or rsa3072", k)
}

func (k KeyAlgorithm) generate() (crypto.Signer, error) {
	switch k {
	case "", CAKeyP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case CAKeyP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case CAKeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("issuance: CA key type %q: p256, p384 or rsa3072", k)
}

// InitOptions configures InitCA.
type InitOptions struct {
	// Dir receives root.crt, issuing.crt, root.crl and, for file keys,
	// root.key and issuing.key (0600).
	Dir string
	// Country (default US) and Organization of the CA subjects. RootName
	// and IssuingName are the CNs; when not given, each is a default name
	// with a key-derived suffix (NameSuffix), unique per environment.
	Country      string
	Organization string
	RootName     string
	IssuingName  string
	KeyType      KeyAlgorithm
	// Token, if set, is where the issuing CA key is generated (sensitive,
	// non-extractable), with CKA_ID KeyID; otherwise the key goes to a file.
	Token *pkcs11.Token
	KeyID []byte
	// RootKeyFile keeps the root key in a file, to be moved offline. (The
	// root key may also live in Token, with KeyID+1.)
	RootKeyInToken bool
	// BaseURL is the gateway's public http URL: the self-made issuing CA
	// certificate's CRL DP and AIA caIssuers point at the root's CRL and
	// certificate the gateway serves under it (RootCRLPath, RootCertPath).
	BaseURL string
	// CSRFile, if set, makes only the issuing key (or takes the one already
	// in Token under KeyID) and writes a PEM CSR for it there: the root is
	// the agency's, and `ca import` installs what it signs.
	CSRFile string
	Now     func() time.Time
}

// Where the gateway serves the self-made root's CRL and certificate
// (under the base URL).
const (
	RootCRLPath  = "/crl/root.crl"
	RootCertPath = "/ca/root.crt"
)

// InitResult says what InitCA made.
type InitResult struct {
	Root, Issuing               *x509.Certificate
	RootFile, IssuingFile       string
	RootKeyFile, IssuingKeyFile string // "" when the key is in the token
	RootCRLFile                 string
	IssuingKeyID                []byte
	// CSR mode: the request, where it went, and whether the key was
	// already in the token.
	CSR       *x509.CertificateRequest
	ReusedKey bool
}

// InitCA makes a root CA and an issuing CA for derived credentials (a
// development hierarchy), or, with CSRFile, the issuing key and a CSR for
// the agency's root. The issuing CA asserts the policies it issues under
// (…3.6, …3.40, …3.41) and may sign only end-entity certificates (pathLen 0).
func InitCA(ctx context.Context, o InitOptions) (*InitResult, error) {
	if o.Dir == "" {
		return nil, errors.New("issuance: ca init: no directory")
	}
	if o.Organization == "" {
		o.Organization = "credgw"
	}
	if o.Country == "" {
		o.Country = "US"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if len(o.KeyID) == 0 {
		o.KeyID = []byte{0x01}
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	res := &InitResult{RootFile: filepath.Join(o.Dir, "root.crt"), IssuingFile: filepath.Join(o.Dir, "issuing.crt"), IssuingKeyID: o.KeyID}
	// A CSR for a new key writes no certificate (a re-key makes one beside
	// the CA in use); its key is checked below.
	for _, f := range []string{res.RootFile, res.IssuingFile} {
		if _, err := os.Stat(f); err == nil && o.CSRFile == "" {
			return nil, fmt.Errorf("issuance: ca init: %s exists already; refusing to replace a CA", f)
		}
	}
	if err := refuseExistingKeys(ctx, o); err != nil {
		return nil, err
	}
	if o.CSRFile != "" {
		return res, initCSR(ctx, o, res)
	}
	issKey, _, err := issuingKey(ctx, o, res, false)
	if err != nil {
		return nil, err
	}
	var rootKey crypto.Signer
	if o.Token != nil && o.RootKeyInToken {
		kt, err := o.KeyType.pkcs11Type()
		if err != nil {
			return nil, err
		}
		rootID := append(append([]byte{}, o.KeyID...), 0x52) // 'R'
		if rootKey, err = o.Token.GenerateKeyPair(ctx, pkcs11.KeySpec{Type: kt, ID: rootID, Label: o.Organization + " root CA", Usage: pkcs11.UsageSign}); err != nil {
			return nil, err
		}
	} else {
		if rootKey, err = o.KeyType.generate(); err != nil {
			return nil, err
		}
		res.RootKeyFile = filepath.Join(o.Dir, "root.key")
		if err := writeKeyFile(res.RootKeyFile, rootKey); err != nil {
			return nil, err
		}
	}
	if o.RootName == "" {
		if o.RootName, err = defaultName(o.Organization+" Derived Credential Root CA", rootKey.Public()); err != nil {
			return nil, err
		}
	}
	if o.IssuingName == "" {
		if o.IssuingName, err = defaultName(o.Organization+" Derived PIV Issuing CA", issKey.Public()); err != nil {
			return nil, err
		}
	}
	now := o.Now().Add(-time.Hour).Truncate(time.Second)
	rootTmpl := &x509.Certificate{
		Subject:   caSubject(o.Country, o.Organization, o.RootName),
		NotBefore: now, NotAfter: now.AddDate(20, 0, 0),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	if res.Root, err = selfOrParentSign(rootTmpl, nil, rootKey.Public(), rootKey); err != nil {
		return nil, err
	}
	issTmpl := &x509.Certificate{
		Subject:   caSubject(o.Country, o.Organization, o.IssuingName),
		NotBefore: now, NotAfter: now.AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		// digitalSignature: the CA signs its own OCSP responses.
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		Policies: []x509.OID{mustOID(oidCommonPolicy), mustOID(oidDerivedPIVAuth), mustOID(oidDerivedPIVAuthHW)},
	}
	if base := strings.TrimSuffix(o.BaseURL, "/"); base != "" {
		// What a relying party that checks the whole path needs (zlint
		// e_sub_ca_crl_distribution_points_missing, w_sub_ca_aia_missing).
		issTmpl.CRLDistributionPoints = []string{base + RootCRLPath}
		issTmpl.IssuingCertificateURL = []string{base + RootCertPath}
	}
	if res.Issuing, err = selfOrParentSign(issTmpl, res.Root, issKey.Public(), rootKey); err != nil {
		return nil, err
	}
	for path, c := range map[string]*x509.Certificate{res.RootFile: res.Root, res.IssuingFile: res.Issuing} {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644); err != nil {
			return nil, err
		}
	}
	crl, err := SignRootCRL(RootCRLOptions{Root: res.Root, Key: rootKey, Now: o.Now()})
	if err != nil {
		return nil, err
	}
	res.RootCRLFile = filepath.Join(o.Dir, "root.crl")
	if err := os.WriteFile(res.RootCRLFile, crl, 0o644); err != nil {
		return nil, err
	}
	return res, nil
}

// initCSR is InitCA's CSR mode: the issuing key (made now, or the one the
// token already holds under KeyID, when a CSR is asked for again) and a PEM
// CSR for it. No root is made.
func initCSR(ctx context.Context, o InitOptions, res *InitResult) error {
	key, reused, err := issuingKey(ctx, o, res, true)
	if err != nil {
		return err
	}
	res.ReusedKey = reused
	if o.IssuingName == "" {
		if o.IssuingName, err = defaultName(o.Organization+" Derived PIV Issuing CA", key.Public()); err != nil {
			return err
		}
	}
	der, err := IssuingCSR(key, caSubject(o.Country, o.Organization, o.IssuingName))
	if err != nil {
		return err
	}
	if res.CSR, err = x509.ParseCertificateRequest(der); err != nil {
		return err
	}
	return os.WriteFile(o.CSRFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644)
}

// refuseExistingKeys: ca init never replaces a CA key. Its certificates
// may have moved to the names a config gives them, so the keys are what
// show a CA is there: a key file in Dir, or a private key under the
// issuing (or root) key's CKA_ID in the token. The CSR mode may take the
// token's issuing key again (asked twice, it makes the same CSR).
func refuseExistingKeys(ctx context.Context, o InitOptions) error {
	files := []string{"issuing.key"}
	if o.CSRFile == "" {
		files = append(files, "root.key")
	}
	for _, name := range files {
		if _, err := os.Lstat(filepath.Join(o.Dir, name)); err == nil {
			return fmt.Errorf("issuance: ca init: %s exists already: a CA key is there, and ca init never replaces one (move the CA's files away to start a new one)", filepath.Join(o.Dir, name))
		}
	}
	if o.Token == nil || o.CSRFile != "" {
		return nil
	}
	ids := [][]byte{o.KeyID}
	if o.RootKeyInToken {
		ids = append(ids, append(append([]byte{}, o.KeyID...), 0x52))
	}
	for _, id := range ids {
		objs, err := o.Token.FindObjects(ctx, pkcs11.Query{Class: pkcs11.ClassPrivateKey, ID: id})
		if err != nil {
			return fmt.Errorf("issuance: ca init: looking for keys already in %s: %w", o.Token, err)
		}
		if len(objs) > 0 {
			return fmt.Errorf("issuance: ca init: %s already holds a private key with CKA_ID %x (%q): a CA key is there, and ca init never replaces one (use another ca.key_uri id, or credgw ca import for a CA whose key this is)", o.Token, id, objs[0].Label)
		}
	}
	return nil
}

// issuingKey makes the issuing CA key in the token (or a file in Dir);
// with reuse, a key already in the token under KeyID is taken instead.
func issuingKey(ctx context.Context, o InitOptions, res *InitResult, reuse bool) (crypto.Signer, bool, error) {
	if o.Token == nil {
		k, err := o.KeyType.generate()
		if err != nil {
			return nil, false, err
		}
		res.IssuingKeyFile = filepath.Join(o.Dir, "issuing.key")
		return k, false, writeKeyFile(res.IssuingKeyFile, k)
	}
	if reuse {
		if k, err := o.Token.Signer(ctx, pkcs11.KeyRef{ID: o.KeyID}); err == nil {
			return k, true, nil
		}
	}
	kt, err := o.KeyType.pkcs11Type()
	if err != nil {
		return nil, false, err
	}
	label := o.IssuingName
	if label == "" {
		label = o.Organization + " issuing CA"
	}
	k, err := o.Token.GenerateKeyPair(ctx, pkcs11.KeySpec{Type: kt, ID: o.KeyID, Label: label, Usage: pkcs11.UsageSign})
	return k, false, err
}

// defaultName is a default CA name with the key's suffix.
func defaultName(base string, pub crypto.PublicKey) (string, error) {
	s, err := NameSuffix(pub)
	if err != nil {
		return "", err
	}
	return base + " " + s, nil
}

func selfOrParentSign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if tmpl.SubjectKeyId, err = subjectKeyID(pub); err != nil {
		return nil, err
	}
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("issuance: sign CA certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

func mustOID(o asn1.ObjectIdentifier) x509.OID {
	ints := make([]uint64, len(o))
	for i, v := range o {
		ints[i] = uint64(v)
	}
	oid, err := x509.OIDFromInts(ints)
	if err != nil {
		panic(err)
	}
	return oid
}

func writeKeyFile(path string, k crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return err
	}
	// O_EXCL: a key file is never written over (ca init refuses earlier).
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadKeyFile reads a PKCS#8 PEM key file (which must be 0600).
func ReadKeyFile(path string) (crypto.Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("issuance: key file %s has mode %v: make it 0600", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("issuance: %s holds no PKCS#8 PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("issuance: %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("issuance: %s: not a signing key", path)
	}
	return s, nil
}
