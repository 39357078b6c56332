package hsmsim

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/credgw/credgw/activation/attest"
)

// Vendor is a simulated key attestation vendor: a root and an intermediate
// ("factory provisioned" attestation keys, as an Android device's keystore
// carries), issuing attestation certificates with a KeyDescription for a
// given device key, challenge and security level. Its root is what a
// gateway lists in attestation.android_root_files to trust it.
type Vendor struct {
	Root, Intermediate *x509.Certificate
	interKey           crypto.Signer
}

// VendorRootFile is where InitVendor writes the root (PEM) under its dir.
const VendorRootFile = "root.crt"

// InitVendor makes a vendor in dir (root, intermediate and their keys, 0600),
// or opens the one there.
func InitVendor(dir string) (*Vendor, error) {
	if _, err := os.Stat(filepath.Join(dir, "intermediate.key")); err == nil {
		return OpenVendor(dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"credgw simulated attestation vendor"}, CommonName: "Simulated Attestation Root " + keySuffix(rootKey.Public())},
		NotBefore: now, NotAfter: now.AddDate(20, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	root, err := issue(rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	inter, err := issue(&x509.Certificate{
		Subject:   pkix.Name{Organization: []string{"credgw simulated attestation vendor"}, CommonName: "Simulated Keystore " + keySuffix(interKey.Public())},
		NotBefore: now, NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign,
	}, root, interKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	for name, v := range map[string]any{VendorRootFile: root, "root.key": rootKey, "intermediate.crt": inter, "intermediate.key": interKey} {
		if err := writePEM(filepath.Join(dir, name), v); err != nil {
			return nil, err
		}
	}
	return &Vendor{Root: root, Intermediate: inter, interKey: interKey}, nil
}

// OpenVendor opens the vendor InitVendor made in dir.
func OpenVendor(dir string) (*Vendor, error) {
	root, err := readCert(filepath.Join(dir, VendorRootFile))
	if err != nil {
		return nil, err
	}
	inter, err := readCert(filepath.Join(dir, "intermediate.crt"))
	if err != nil {
		return nil, err
	}
	key, err := readKey(filepath.Join(dir, "intermediate.key"))
	if err != nil {
		return nil, err
	}
	return &Vendor{Root: root, Intermediate: inter, interKey: key}, nil
}

// AttestOptions describe the key and the device an attestation speaks for:
// by default a key generated for signing on a locked device with verified
// boot, held at Level.
type AttestOptions struct {
	// Level is where the key is held (the zero value is Software: set
	// TrustedEnvironment or StrongBox for a hardware keystore).
	Level attest.SecurityLevel
	// Imported: the key was imported, not generated on the device.
	Imported bool
	// NoSign: the key's purposes leave out signing.
	NoSign bool
	// Unlocked, BootState: the device's state (default locked, Verified).
	Unlocked  bool
	BootState attest.VerifiedBootState
	// Extension replaces the KeyDescription's DER (malformed-extension tests).
	Extension []byte
}

// Attest returns the attestation chain for pub (DER, the attestation
// certificate first, the root last).
func (v *Vendor) Attest(pub crypto.PublicKey, challenge []byte, o AttestOptions) ([][]byte, error) {
	level := o.Level
	origin, purposes := attest.OriginGenerated, []int{attest.PurposeSign, 3}
	if o.Imported {
		origin = 2
	}
	if o.NoSign {
		purposes = []int{0, 1}
	}
	osVersion, patch := 150000, 202611
	auth := attest.AuthorizationList{Purposes: purposes, Origin: &origin, OSVersion: &osVersion, OSPatch: &patch,
		RootOfTrust: &attest.RootOfTrust{VerifiedBootKey: make([]byte, 32), DeviceLocked: !o.Unlocked, VerifiedBootState: o.BootState, VerifiedBootHash: make([]byte, 32)}}
	kd := attest.KeyDescription{AttestationVersion: 300, AttestationSecurityLevel: level, KeyMintVersion: 300, KeyMintSecurityLevel: level,
		Challenge: challenge}
	if level == attest.Software {
		kd.SoftwareEnforced = auth
	} else {
		kd.HardwareEnforced = auth
	}
	ext := o.Extension
	if ext == nil {
		var err error
		if ext, err = kd.Marshal(); err != nil {
			return nil, err
		}
	}
	// As a keystore does: the attestation certificate's dates are the
	// device's own (not checked by verifiers).
	leaf, err := issue(&x509.Certificate{
		Subject:         pkix.Name{CommonName: "Android Keystore Key"},
		NotBefore:       time.Unix(0, 0).UTC(),
		NotAfter:        time.Date(2048, 1, 1, 0, 0, 0, 0, time.UTC),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: attest.OIDKeyDescription, Value: ext}},
	}, v.Intermediate, pub, v.interKey)
	if err != nil {
		return nil, fmt.Errorf("hsmsim: attestation certificate: %w", err)
	}
	return [][]byte{leaf.Raw, v.Intermediate.Raw, v.Root.Raw}, nil
}
