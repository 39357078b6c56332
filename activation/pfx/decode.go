package pfx

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"strconv"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Decode reads a PKCS#12 file: every private key with its certificate (in
// the file's order) and the other certificates (the CA chain). It verifies
// the MAC first; ErrIncorrectPassword means the password is wrong or the
// file was changed.
func Decode(der []byte, password string) (entries []Entry, others []*x509.Certificate, err error) {
	d := decoder{keys: map[string][]byte{}}
	if err := d.decode(der, password); err != nil {
		return nil, nil, err
	}
	used := make([]bool, len(d.certs))
	for i, k := range d.keyBags {
		j := -1
		for c, cb := range d.certs {
			if !used[c] && len(k.localKeyID) > 0 && bytes.Equal(cb.localKeyID, k.localKeyID) {
				j = c
				break
			}
		}
		if j < 0 { // no (matching) localKeyId: the certificate of the same key
			for c, cb := range d.certs {
				if !used[c] && k.key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cb.cert.PublicKey) {
					j = c
					break
				}
			}
		}
		if j < 0 {
			return nil, nil, fmt.Errorf("pfx: key %d has no certificate in the file", i+1)
		}
		if !k.key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(d.certs[j].cert.PublicKey) {
			return nil, nil, fmt.Errorf("pfx: key %d is not the key of the certificate that shares its localKeyId", i+1)
		}
		used[j] = true
		name := k.friendlyName
		if name == "" {
			name = d.certs[j].friendlyName
		}
		entries = append(entries, Entry{Key: k.key, Certificate: d.certs[j].cert, FriendlyName: name})
	}
	for c, cb := range d.certs {
		if !used[c] {
			others = append(others, cb.cert)
		}
	}
	return entries, others, nil
}

type bagAttrs struct {
	friendlyName string
	localKeyID   []byte
}

type keyBag struct {
	bagAttrs
	key crypto.Signer
}

type certBagEntry struct {
	bagAttrs
	cert *x509.Certificate
}

type decoder struct {
	password string
	keys     map[string][]byte // PBKDF2 outputs by parameters: bags that share a salt cost one derivation
	keyBags  []keyBag
	certs    []certBagEntry
	work     int64 // iterations of the derivations run so far (MaxWork)
}

// maxIterations is MaxIterations and maxWork MaxWork; tests lower them.
var (
	maxIterations int64 = MaxIterations
	maxWork       int64 = MaxWork
)

// spend charges a derivation of iterations rounds to the file before it
// runs, and refuses it if the file's total would pass maxWork.
func (d *decoder) spend(what string, iterations int64) error {
	if iterations > maxWork-d.work {
		return fmt.Errorf("%w: %s of %d iterations would bring the file's key derivations to %d iterations, more than the %d allowed",
			ErrTooMuchWork, what, iterations, d.work+iterations, maxWork)
	}
	d.work += iterations
	return nil
}

var errMalformed = errors.New("pfx: not a DER-encoded PKCS#12 file (malformed ASN.1)")

var errNotDecrypted = errors.New("pfx: the MAC verifies but a bag does not decrypt under the same password " +
	"(the writer encodes the PBES2 password differently, or the file is damaged)")

func (d *decoder) decode(der []byte, password string) error {
	d.password = password
	in := cryptobyte.String(der)
	var pfx, authSafeCI, content, authSafe cryptobyte.String
	var version int64
	var ct asn1.ObjectIdentifier
	if !in.ReadASN1(&pfx, cbasn1.SEQUENCE) || !in.Empty() ||
		!pfx.ReadASN1Integer(&version) ||
		!pfx.ReadASN1(&authSafeCI, cbasn1.SEQUENCE) ||
		!authSafeCI.ReadASN1ObjectIdentifier(&ct) ||
		!authSafeCI.ReadASN1(&content, cbasn1.Tag(0).Constructed().ContextSpecific()) || !authSafeCI.Empty() ||
		!content.ReadASN1(&authSafe, cbasn1.OCTET_STRING) || !content.Empty() {
		return errMalformed
	}
	if version != 3 {
		return fmt.Errorf("pfx: version %d (only version 3 exists)", version)
	}
	if !ct.Equal(oidData) {
		return errors.New("pfx: only password integrity (a MAC) is supported, not public-key signed files")
	}
	if pfx.Empty() {
		return errors.New("pfx: the file has no MAC: refusing a file whose integrity cannot be checked")
	}
	if err := d.checkMAC(&pfx, authSafe); err != nil {
		return err
	}
	if !pfx.Empty() {
		return errMalformed
	}
	var cis cryptobyte.String
	if !authSafe.ReadASN1(&cis, cbasn1.SEQUENCE) || !authSafe.Empty() {
		return errMalformed
	}
	for !cis.Empty() {
		var ci, body cryptobyte.String
		var typ asn1.ObjectIdentifier
		if !cis.ReadASN1(&ci, cbasn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&typ) ||
			!ci.ReadASN1(&body, cbasn1.Tag(0).Constructed().ContextSpecific()) || !ci.Empty() {
			return errMalformed
		}
		var safeContents []byte
		switch {
		case typ.Equal(oidData):
			var s cryptobyte.String
			if !body.ReadASN1(&s, cbasn1.OCTET_STRING) || !body.Empty() {
				return errMalformed
			}
			safeContents = s
		case typ.Equal(oidEncryptedData):
			var ed, eci, algo, enc cryptobyte.String
			var v int64
			var inner asn1.ObjectIdentifier
			if !body.ReadASN1(&ed, cbasn1.SEQUENCE) || !body.Empty() ||
				!ed.ReadASN1Integer(&v) || !ed.ReadASN1(&eci, cbasn1.SEQUENCE) ||
				!eci.ReadASN1ObjectIdentifier(&inner) ||
				!eci.ReadASN1Element(&algo, cbasn1.SEQUENCE) ||
				!eci.ReadASN1(&enc, cbasn1.Tag(0).ContextSpecific()) || !eci.Empty() {
				return errMalformed
			}
			if v != 0 || !inner.Equal(oidData) {
				return errors.New("pfx: unsupported EncryptedData (version 0 of data only)")
			}
			plain, err := d.decrypt(algo, enc)
			if err != nil {
				return err
			}
			safeContents = plain
		default:
			return fmt.Errorf("pfx: unsupported content type %v in the authenticated safe (public-key enveloped files are not supported)", typ)
		}
		if err := d.safeContents(safeContents); err != nil {
			return err
		}
	}
	return nil
}

// checkMAC reads MacData and verifies it over the authenticated safe.
func (d *decoder) checkMAC(pfx *cryptobyte.String, authSafe []byte) error {
	var md, di, algo, digest, salt cryptobyte.String
	var oid asn1.ObjectIdentifier
	if !pfx.ReadASN1(&md, cbasn1.SEQUENCE) ||
		!md.ReadASN1(&di, cbasn1.SEQUENCE) || !di.ReadASN1(&algo, cbasn1.SEQUENCE) ||
		!algo.ReadASN1ObjectIdentifier(&oid) ||
		!di.ReadASN1(&digest, cbasn1.OCTET_STRING) || !di.Empty() ||
		!md.ReadASN1(&salt, cbasn1.OCTET_STRING) {
		return errMalformed
	}
	iterations := int64(1)
	if !md.Empty() && (!md.ReadASN1Integer(&iterations) || !md.Empty()) {
		return errMalformed
	}
	if oid.Equal(oidPBMAC1) {
		return errors.New("pfx: PBMAC1 integrity is not supported (write the file with an HMAC-SHA-256 MAC)")
	}
	h, ok := hashFor(oid)
	if !ok || !(oid.Equal(oidSHA1) || oid.Equal(oidSHA256)) {
		return fmt.Errorf("pfx: MAC digest %v is not supported (SHA-1 or SHA-256)", oid)
	}
	if iterations < 1 || iterations > maxIterations {
		return fmt.Errorf("pfx: MAC iteration count %d is outside 1–%d", iterations, maxIterations)
	}
	if !algo.Empty() && !algo.SkipASN1(cbasn1.NULL) {
		return errMalformed
	}
	pw, err := bmpPassword(d.password)
	if err != nil {
		return ErrIncorrectPassword
	}
	if err := d.spend("the MAC key derivation", iterations); err != nil {
		return err
	}
	m := hmac.New(h, macKey(h, pw, salt, int(iterations)))
	m.Write(authSafe)
	if !constantTimeEqual(m.Sum(nil), digest) {
		return ErrIncorrectPassword
	}
	return nil
}

// decrypt opens a PBES2 (PBKDF2, AES-CBC) ciphertext; algo is the whole
// AlgorithmIdentifier.
func (d *decoder) decrypt(algo, ct cryptobyte.String) ([]byte, error) {
	var a, params, kdf, kdfParams, enc, salt, iv cryptobyte.String
	var oid, kdfOID, encOID asn1.ObjectIdentifier
	if !algo.ReadASN1(&a, cbasn1.SEQUENCE) || !a.ReadASN1ObjectIdentifier(&oid) {
		return nil, errMalformed
	}
	if !oid.Equal(oidPBES2) {
		return nil, fmt.Errorf("pfx: encryption %v is not supported: only PBES2 with AES (legacy RC2 and 3DES files must be re-exported)", oid)
	}
	var iterations int64
	if !a.ReadASN1(&params, cbasn1.SEQUENCE) || !a.Empty() ||
		!params.ReadASN1(&kdf, cbasn1.SEQUENCE) || !kdf.ReadASN1ObjectIdentifier(&kdfOID) ||
		!kdf.ReadASN1(&kdfParams, cbasn1.SEQUENCE) || !kdf.Empty() ||
		!params.ReadASN1(&enc, cbasn1.SEQUENCE) || !params.Empty() ||
		!enc.ReadASN1ObjectIdentifier(&encOID) || !enc.ReadASN1(&iv, cbasn1.OCTET_STRING) || !enc.Empty() {
		return nil, errMalformed
	}
	if !kdfOID.Equal(oidPBKDF2) {
		return nil, fmt.Errorf("pfx: key derivation %v is not supported (PBKDF2)", kdfOID)
	}
	if !kdfParams.ReadASN1(&salt, cbasn1.OCTET_STRING) || !kdfParams.ReadASN1Integer(&iterations) {
		return nil, errMalformed
	}
	var keyLen int64
	if kdfParams.PeekASN1Tag(cbasn1.INTEGER) && !kdfParams.ReadASN1Integer(&keyLen) {
		return nil, errMalformed
	}
	prf := oidHMACSHA1 // the default (RFC 8018)
	if !kdfParams.Empty() {
		var p cryptobyte.String
		if !kdfParams.ReadASN1(&p, cbasn1.SEQUENCE) || !kdfParams.Empty() || !p.ReadASN1ObjectIdentifier(&prf) ||
			(!p.Empty() && (!p.SkipASN1(cbasn1.NULL) || !p.Empty())) {
			return nil, errMalformed
		}
	}
	h, ok := hashFor(prf)
	if !ok || prf.Equal(oidSHA1) || prf.Equal(oidSHA256) {
		return nil, fmt.Errorf("pfx: PBKDF2 pseudo-random function %v is not supported", prf)
	}
	n := 0
	switch {
	case encOID.Equal(oidAES128CBC):
		n = 16
	case encOID.Equal(oidAES192CBC):
		n = 24
	case encOID.Equal(oidAES256CBC):
		n = 32
	default:
		return nil, fmt.Errorf("pfx: cipher %v is not supported (AES-CBC)", encOID)
	}
	switch {
	case keyLen != 0 && keyLen != int64(n):
		return nil, errors.New("pfx: the PBKDF2 key length does not fit the cipher")
	case iterations < 1 || iterations > maxIterations:
		return nil, fmt.Errorf("pfx: PBKDF2 iteration count %d is outside 1–%d", iterations, maxIterations)
	case len(iv) != aes.BlockSize:
		return nil, errors.New("pfx: the AES-CBC IV is not 16 bytes")
	case len(ct) == 0 || len(ct)%aes.BlockSize != 0:
		return nil, errors.New("pfx: the ciphertext is not whole AES blocks")
	}
	key, err := d.derive(h, prf, salt, int(iterations), n)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
	// The MAC verified under this password, so a bad padding is a writer
	// that derived its encryption key otherwise (a BMP-encoded password,
	// say), not a wrong password.
	pad := int(plain[len(plain)-1])
	if pad == 0 || pad > aes.BlockSize {
		return nil, errNotDecrypted
	}
	for _, b := range plain[len(plain)-pad:] {
		if int(b) != pad {
			return nil, errNotDecrypted
		}
	}
	return plain[:len(plain)-pad], nil
}

func (d *decoder) derive(h func() hash.Hash, prf asn1.ObjectIdentifier, salt []byte, iterations, n int) ([]byte, error) {
	id := prf.String() + "/" + strconv.Itoa(iterations) + "/" + strconv.Itoa(n) + "/" + string(salt)
	if k, ok := d.keys[id]; ok {
		return k, nil
	}
	if err := d.spend("a PBKDF2 derivation", int64(iterations)); err != nil {
		return nil, err
	}
	// PBES2 takes the password's bytes as they are (UTF-8), unlike the
	// PKCS#12 derivation of the MAC key.
	k, err := pbkdf2.Key(h, d.password, salt, iterations, n)
	if err != nil {
		return nil, fmt.Errorf("pfx: %w", err)
	}
	d.keys[id] = k
	return k, nil
}

func (d *decoder) safeContents(b []byte) error {
	s := cryptobyte.String(b)
	var bags cryptobyte.String
	if !s.ReadASN1(&bags, cbasn1.SEQUENCE) || !s.Empty() {
		return errMalformed
	}
	for !bags.Empty() {
		var bag, value cryptobyte.String
		var id asn1.ObjectIdentifier
		if !bags.ReadASN1(&bag, cbasn1.SEQUENCE) || !bag.ReadASN1ObjectIdentifier(&id) ||
			!bag.ReadASN1(&value, cbasn1.Tag(0).Constructed().ContextSpecific()) {
			return errMalformed
		}
		var attrs bagAttrs
		if !bag.Empty() {
			var set cryptobyte.String
			if !bag.ReadASN1(&set, cbasn1.SET) || !bag.Empty() {
				return errMalformed
			}
			var err error
			if attrs, err = readAttributes(set); err != nil {
				return err
			}
		}
		switch {
		case id.Equal(oidCertBag):
			var cb, der cryptobyte.String
			var certType asn1.ObjectIdentifier
			var explicit cryptobyte.String
			if !value.ReadASN1(&cb, cbasn1.SEQUENCE) || !value.Empty() || !cb.ReadASN1ObjectIdentifier(&certType) ||
				!cb.ReadASN1(&explicit, cbasn1.Tag(0).Constructed().ContextSpecific()) || !cb.Empty() ||
				!explicit.ReadASN1(&der, cbasn1.OCTET_STRING) || !explicit.Empty() {
				return errMalformed
			}
			if !certType.Equal(oidX509Cert) {
				return fmt.Errorf("pfx: certificate type %v is not supported (X.509)", certType)
			}
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("pfx: a certificate bag: %w", err)
			}
			d.certs = append(d.certs, certBagEntry{attrs, c})
		case id.Equal(oidShroudedKey), id.Equal(oidKeyBag):
			var p8 []byte
			if id.Equal(oidShroudedKey) {
				var epki, algo, enc cryptobyte.String
				if !value.ReadASN1(&epki, cbasn1.SEQUENCE) || !value.Empty() ||
					!epki.ReadASN1Element(&algo, cbasn1.SEQUENCE) || !epki.ReadASN1(&enc, cbasn1.OCTET_STRING) || !epki.Empty() {
					return errMalformed
				}
				var err error
				if p8, err = d.decrypt(algo, enc); err != nil {
					return err
				}
			} else {
				var pki cryptobyte.String
				if !value.ReadASN1Element(&pki, cbasn1.SEQUENCE) || !value.Empty() {
					return errMalformed
				}
				p8 = pki
			}
			k, err := x509.ParsePKCS8PrivateKey(p8)
			if id.Equal(oidShroudedKey) {
				clear(p8)
			}
			if err != nil {
				return fmt.Errorf("pfx: a key bag: %w", err)
			}
			signer, ok := k.(crypto.Signer)
			if !ok {
				return fmt.Errorf("pfx: a key bag holds a %T, not an RSA, ECDSA or Ed25519 key", k)
			}
			d.keyBags = append(d.keyBags, keyBag{attrs, signer})
		default:
			return fmt.Errorf("pfx: bag type %v is not supported (keys and certificates only)", id)
		}
	}
	return nil
}

func readAttributes(set cryptobyte.String) (bagAttrs, error) {
	var a bagAttrs
	for !set.Empty() {
		var attr, values cryptobyte.String
		var id asn1.ObjectIdentifier
		if !set.ReadASN1(&attr, cbasn1.SEQUENCE) || !attr.ReadASN1ObjectIdentifier(&id) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return a, errMalformed
		}
		switch {
		case id.Equal(oidFriendlyName):
			var v cryptobyte.String
			if !values.ReadASN1(&v, cbasn1.Tag(30)) || !values.Empty() {
				return a, errMalformed
			}
			name, err := decodeBMPString(v)
			if err != nil {
				return a, err
			}
			a.friendlyName = name
		case id.Equal(oidLocalKeyID):
			var v cryptobyte.String
			if !values.ReadASN1(&v, cbasn1.OCTET_STRING) || !values.Empty() {
				return a, errMalformed
			}
			a.localKeyID = v
		}
		// Other attributes (a Microsoft CSP name, say) are read past.
	}
	return a, nil
}
