// Package pfx writes and reads the one PKCS#12 file (RFC 7292) that holds a
// person's escrowed encryption key and its key history: several private
// keys, each with its certificate and a friendly name saying which key is
// current.
//
// It exists because go-pkcs12 writes and reads exactly one key a file and
// no friendly names (see docs/decisions.md). The device agent writes all
// its files under the keystore PIN with one Writer (PINIterations). It does only what that library does not, in the
// profile go-pkcs12 calls Modern, so that a reader that opens a go-pkcs12
// Modern file opens these too (tested: OpenSSL 3.0 and go-pkcs12 itself):
//
//   - keys in PKCS#8 shrouded key bags, certificates in certificate bags
//     inside one encrypted SafeContents, both with PBES2 (PBKDF2 with
//     HMAC-SHA-256, AES-256-CBC);
//   - a friendlyName and a localKeyId (SHA-1 of the certificate, as OpenSSL
//     writes it) on every key and its certificate;
//   - an HMAC-SHA-256 MAC keyed by the PKCS#12 key derivation (RFC 7292
//     appendix B), which Debian 12's OpenSSL reads (PBMAC1 it does not).
//
// Every bag of a file is encrypted under one PBKDF2 derivation: the bags
// share one salt and each has its own random IV. Guessing the password
// costs an attacker the same per guess as with a salt for each bag (any
// one bag tests a guess), and writing a file of twenty keys costs two key
// derivations rather than sixty.
//
// Decode reads what Encode writes and what OpenSSL and go-pkcs12 write with
// PBES2: MAC with SHA-1 or SHA-256, PBKDF2 with HMAC-SHA-1 to SHA-512,
// AES-CBC. It refuses the legacy RC2/3DES PBEs, PBMAC1, unknown bag types
// and trailing data, bounds a file's key-derivation work (MaxIterations
// each, MaxWork in all), and verifies the MAC before it decrypts anything.
package pfx

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"unicode/utf16"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Entry is one private key with its certificate.
type Entry struct {
	Key          crypto.Signer // *rsa.PrivateKey, *ecdsa.PrivateKey or ed25519.PrivateKey
	Certificate  *x509.Certificate
	FriendlyName string
}

// DefaultIterations is the PBKDF2 and MAC iteration count Encode uses
// when given none: go-pkcs12 Modern's and OpenSSL 3's default (`openssl
// pkcs12 -export` without -iter: PKCS12_DEFAULT_ITER, 2048, for PBKDF2 and
// for the MAC).
const DefaultIterations = 2048

// PINIterations is the PBKDF2-HMAC-SHA-256 iteration count of files under
// a person's PIN (the device agent's keystore files). A PIN is a
// low-entropy secret, so the count is what current guidance asks:
//   - OWASP Password Storage Cheat Sheet: PBKDF2 "with a work factor of
//     600,000 or more and with an internal hash function of HMAC-SHA-256";
//   - NIST SP 800-132 §5.2: "A minimum iteration count of 1,000 is
//     recommended", as large as the users' tolerance of the delay allows,
//     up to 10,000,000 for critical keys;
//   - NIST SP 800-63B §5.1.1.2: the count "SHOULD be as large as
//     verification server performance will allow, typically at least
//     10,000 iterations".
//
// Readers take it (TestKeyHistoryReaders in test/): OpenSSL 3.0, NSS 3.87
// pk12util, Java 17 keytool (it refuses more than 5,000,000:
// sun.security.pkcs12.PKCS12KeyStore MAX_ITERATION_COUNT), Python
// cryptography, go-pkcs12.
const PINIterations = 600_000

// PINMACIterations is the MAC's iteration count of files under a PIN. A
// guess can be tested on the MAC alone, and one round of the PKCS#12 KDF
// with SHA-256 is one SHA-256 compression where a PBKDF2-HMAC-SHA-256
// round is two: twice PINIterations makes the MAC as costly to guess
// against as the encryption. Java's keytool refuses a MAC count above
// 5,000,000 ("MAC iteration count too large"); NSS and OpenSSL 3.0 set
// no maximum.
const PINMACIterations = 2 * PINIterations

// MaxIterations bounds the iteration count of each key derivation Decode
// runs (the MAC's and each PBES2 salt's), so that a file cannot make its
// reader spin. MaxWork bounds their sum.
const MaxIterations = 10_000_000

// MaxWork bounds the key-derivation work of one Decode: the sum of the
// iteration counts of every derivation it runs, the MAC's included. A
// derivation that would pass it is refused before it runs
// (ErrTooMuchWork). MaxIterations alone bounds each derivation, not the
// file: every EncryptedData content and every shrouded key bag may carry a
// salt of its own, and a bag is about 150 bytes, so a file the size of a
// package (16 MiB) could ask for some 100,000 derivations of 10,000,000
// rounds, some 40 hours of a device's CPU. (Bags that share a salt and a
// count share one derivation and are charged once.)
//
// The arithmetic:
//   - credgw's own files: a Writer derives once for all its bags and once
//     for the MAC, whatever the number of keys. The transport
//     encryption.p12 (activation/code.TransportPKCS12Iterations) costs
//     1,000 + 1,000 = 2,000; a file under the keystore PIN, PINIterations
//     and PINMACIterations, 600,000 + 1,200,000 = 1,800,000.
//   - a full key history (the current key and the 20 a PIV card keeps)
//     written by a writer that salts every bag apart, at the PIN counts:
//     21 key bags and one certificates' bag, 22 × 600,000, and the MAC,
//     1,200,000: 14,400,000.
//   - one key as OpenSSL and go-pkcs12 lay it out (the keys' bag and the
//     certificates' bag each with a salt, and the MAC) at MaxIterations
//     each: 3 × 10,000,000 = 30,000,000, the bound. Every such file that
//     Decode opened before MaxWork still opens.
//
// At about 1.5 s of a phone's CPU per 10,000,000 PBKDF2-HMAC-SHA-256
// rounds, the most one file can cost is some 4.5 s.
const MaxWork = 3 * MaxIterations

// ErrTooMuchWork: the file asks for more key-derivation work than MaxWork
// (many bags, each salted apart, or counts that add up past it). Nothing
// past the bound was derived.
var ErrTooMuchWork = errors.New("pfx: the file asks for more key-derivation work than a PKCS#12 file needs (refused before deriving)")

// ErrIncorrectPassword: the MAC does not verify under the password (or
// the file was changed).
var ErrIncorrectPassword = errors.New("pfx: wrong password or damaged file (the MAC does not verify)")

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKey   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidCertBag       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidX509Cert      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 22, 1}
	oidFriendlyName  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 20}
	oidLocalKeyID    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 21}
	oidPBES2         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidPBMAC1        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	oidHMACSHA1      = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	oidHMACSHA256    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidHMACSHA384    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	oidHMACSHA512    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}
	oidAES128CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC     = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidSHA1          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
)

// bmpPassword is the password as the PKCS#12 key derivation takes it:
// UTF-16 big-endian with a two-byte terminator (RFC 7292 appendix B.1).
func bmpPassword(password string) ([]byte, error) {
	b, err := bmpString(password)
	if err != nil {
		return nil, err
	}
	return append(b, 0, 0), nil
}

// bmpString encodes s as an ASN.1 BMPString body (UCS-2 big-endian).
func bmpString(s string) ([]byte, error) {
	out := make([]byte, 0, 2*len(s))
	for _, r := range s {
		if r > 0xffff || utf16.IsSurrogate(r) {
			return nil, fmt.Errorf("pfx: %q cannot be written as a BMPString (a character beyond U+FFFF)", r)
		}
		out = append(out, byte(r>>8), byte(r))
	}
	return out, nil
}

func decodeBMPString(b []byte) (string, error) {
	if len(b)%2 != 0 {
		return "", errors.New("pfx: odd-length BMPString")
	}
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i < len(b); i += 2 {
		u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
	}
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	return string(utf16.Decode(u)), nil
}

// macKey is the PKCS#12 key derivation (RFC 7292 appendix B.2) for the
// MAC key (ID 3), whose length is the hash's: one round of the
// construction, so the I-update step of longer outputs never runs.
func macKey(h func() hash.Hash, password, salt []byte, iterations int) []byte {
	d := h()
	u, v := d.Size(), d.BlockSize()
	fill := func(s []byte) []byte {
		if len(s) == 0 {
			return nil
		}
		n := v * ((len(s) + v - 1) / v)
		out := make([]byte, n)
		for i := range out {
			out[i] = s[i%len(s)]
		}
		return out
	}
	buf := make([]byte, 0, v+2*v*((len(salt)+len(password))/v+2))
	buf = append(buf, bytes.Repeat([]byte{3}, v)...)
	buf = append(buf, fill(salt)...)
	buf = append(buf, fill(password)...)
	a := buf
	for range iterations {
		d.Reset()
		d.Write(a)
		a = d.Sum(nil)
	}
	return a[:u]
}

func hashFor(oid asn1.ObjectIdentifier) (func() hash.Hash, bool) {
	switch {
	case oid.Equal(oidSHA1), oid.Equal(oidHMACSHA1):
		return sha1.New, true
	case oid.Equal(oidSHA256), oid.Equal(oidHMACSHA256):
		return sha256.New, true
	case oid.Equal(oidHMACSHA384):
		return sha512.New384, true
	case oid.Equal(oidHMACSHA512):
		return sha512.New, true
	}
	return nil, false
}

// Encode writes one PKCS#12 holding every entry (in order; put the current
// key first, so that readers that take one key take that one) and the CA
// certificates, under password. iterations ≤ 0 means DefaultIterations;
// the MAC takes the same count. To write several files under one password
// (a keystore), use a Writer.
func Encode(entries []Entry, caCerts []*x509.Certificate, password string, iterations int) ([]byte, error) {
	return encode(rand.Reader, entries, caCerts, password, iterations, iterations)
}

func encode(rnd io.Reader, entries []Entry, caCerts []*x509.Certificate, password string, iterations, macIterations int) ([]byte, error) {
	w, err := newWriter(rnd, password, iterations, macIterations)
	if err != nil {
		return nil, err
	}
	return w.Encode(entries, caCerts)
}

// A Writer writes several PKCS#12 files under one password (the files of
// one keystore: a key history as one file and as one file per key) with
// one PBKDF2 derivation and one MAC-key derivation for all of them. Its
// files share the PBKDF2 salt and the MAC salt, drawn afresh for each
// Writer; every bag still has its own random IV. An attacker's cost per
// guess is the same as with a salt for each file: the files are under the
// same password, so one guess tried on any one file tests it for all. A
// salt defeats precomputation across passwords and keystores, which fresh
// salts per Writer still do. Writing twenty-three files at 600,000
// iterations then costs two derivations, not forty-six.
type Writer struct {
	rnd                       io.Reader
	iterations, macIterations int
	salt, macSalt             []byte
	block                     cipher.Block
	macKey                    []byte
}

// NewWriter derives the encryption key (PBKDF2-HMAC-SHA-256, iterations
// rounds) and the MAC key (the PKCS#12 KDF with SHA-256, macIterations
// rounds) from password; ≤ 0 means DefaultIterations.
func NewWriter(password string, iterations, macIterations int) (*Writer, error) {
	return newWriter(rand.Reader, password, iterations, macIterations)
}

func newWriter(rnd io.Reader, password string, iterations, macIterations int) (*Writer, error) {
	if iterations <= 0 {
		iterations = DefaultIterations
	}
	if macIterations <= 0 {
		macIterations = DefaultIterations
	}
	if iterations > MaxIterations || macIterations > MaxIterations {
		return nil, fmt.Errorf("pfx: more than %d iterations would be refused by Decode", MaxIterations)
	}
	bmpPW, err := bmpPassword(password)
	if err != nil {
		return nil, errors.New("pfx: the password has a character beyond U+FFFF")
	}
	defer clear(bmpPW)
	salt := make([]byte, 16)
	if _, err := io.ReadFull(rnd, salt); err != nil {
		return nil, err
	}
	macSalt := make([]byte, 16)
	if _, err := io.ReadFull(rnd, macSalt); err != nil {
		return nil, err
	}
	key, err := pbkdf2.Key(sha256.New, password, salt, iterations, 32)
	if err != nil {
		return nil, fmt.Errorf("pfx: %w", err)
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return &Writer{rnd: rnd, iterations: iterations, macIterations: macIterations, salt: salt, macSalt: macSalt,
		block: block, macKey: macKey(sha256.New, bmpPW, macSalt, macIterations)}, nil
}

// Encode writes one PKCS#12 holding every entry (in order; put the current
// key first, so that readers that take one key take that one) and the CA
// certificates, under the Writer's password.
func (w *Writer) Encode(entries []Entry, caCerts []*x509.Certificate) ([]byte, error) {
	if len(entries) == 0 {
		return nil, errors.New("pfx: no key to write")
	}
	rnd, block, salt, iterations := w.rnd, w.block, w.salt, w.iterations
	// seal encrypts plain under the file's key with a fresh IV and returns
	// the PBES2 AlgorithmIdentifier and the ciphertext.
	seal := func(plain []byte) (algo, ct []byte, err error) {
		iv := make([]byte, aes.BlockSize)
		if _, err := io.ReadFull(rnd, iv); err != nil {
			return nil, nil, err
		}
		pad := aes.BlockSize - len(plain)%aes.BlockSize
		ct = append(slices.Clip(plain), bytes.Repeat([]byte{byte(pad)}, pad)...)
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidPBES2)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidPBKDF2)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1OctetString(salt)
						b.AddASN1Int64(int64(iterations))
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1ObjectIdentifier(oidHMACSHA256)
							b.AddASN1NULL()
						})
					})
				})
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidAES256CBC)
					b.AddASN1OctetString(iv)
				})
			})
		})
		algo, err = b.Bytes()
		return algo, ct, err
	}

	var keyBags, certBags [][]byte
	for i, e := range entries {
		if e.Key == nil || e.Certificate == nil {
			return nil, fmt.Errorf("pfx: entry %d has no key or no certificate", i)
		}
		if pub, ok := e.Key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(e.Certificate.PublicKey) {
			return nil, fmt.Errorf("pfx: entry %d: the key is not the one its certificate certifies", i)
		}
		id := sha1.Sum(e.Certificate.Raw)
		attrs, err := attributes(e.FriendlyName, id[:])
		if err != nil {
			return nil, err
		}
		p8, err := x509.MarshalPKCS8PrivateKey(e.Key)
		if err != nil {
			return nil, fmt.Errorf("pfx: entry %d: %w", i, err)
		}
		algo, ct, err := seal(p8)
		clear(p8)
		if err != nil {
			return nil, err
		}
		keyBags = append(keyBags, safeBag(oidShroudedKey, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(algo)
				b.AddASN1OctetString(ct)
			})
		}, attrs))
		certBags = append(certBags, certBag(e.Certificate.Raw, attrs))
	}
	for _, c := range caCerts {
		certBags = append(certBags, certBag(c.Raw, nil))
	}
	certsPlain, err := sequenceOf(certBags)
	if err != nil {
		return nil, err
	}
	algo, ct, err := seal(certsPlain)
	if err != nil {
		return nil, err
	}
	keysPlain, err := sequenceOf(keyBags)
	if err != nil {
		return nil, err
	}
	// AuthenticatedSafe: the certificates encrypted, the (shrouded) keys
	// as data, the order OpenSSL and go-pkcs12 write.
	var as cryptobyte.Builder
	as.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidEncryptedData)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(0)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidData)
						b.AddBytes(algo)
						b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
					})
				})
			})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidData)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(keysPlain)
			})
		})
	})
	authSafe, err := as.Bytes()
	if err != nil {
		return nil, err
	}
	return sealMAC(authSafe, w.macKey, w.macSalt, w.macIterations)
}

// withMAC wraps an AuthenticatedSafe in the PFX with its HMAC-SHA-256 MAC
// under a fresh salt.
func withMAC(rnd io.Reader, authSafe, bmpPW []byte, iterations int) ([]byte, error) {
	macSalt := make([]byte, 16)
	if _, err := io.ReadFull(rnd, macSalt); err != nil {
		return nil, err
	}
	return sealMAC(authSafe, macKey(sha256.New, bmpPW, macSalt, iterations), macSalt, iterations)
}

// sealMAC wraps an AuthenticatedSafe in the PFX with its HMAC-SHA-256 MAC
// under key, which the PKCS#12 KDF derived with macSalt and iterations.
func sealMAC(authSafe, key, macSalt []byte, iterations int) ([]byte, error) {
	m := hmac.New(sha256.New, key)
	m.Write(authSafe)
	var pfx cryptobyte.Builder
	pfx.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(3)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidData)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(authSafe)
			})
		})
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidSHA256)
					b.AddASN1NULL()
				})
				b.AddASN1OctetString(m.Sum(nil))
			})
			b.AddASN1OctetString(macSalt)
			b.AddASN1Int64(int64(iterations))
		})
	})
	return pfx.Bytes()
}

// attributes is a bag's attribute SET (friendlyName, localKeyId), each
// element encoded and the SET sorted as DER requires.
func attributes(friendlyName string, localKeyID []byte) ([]byte, error) {
	var elems [][]byte
	if friendlyName != "" {
		bmp, err := bmpString(friendlyName)
		if err != nil {
			return nil, err
		}
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidFriendlyName)
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(30), func(b *cryptobyte.Builder) { b.AddBytes(bmp) }) // BMPString
			})
		})
		elems = append(elems, b.BytesOrPanic())
	}
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidLocalKeyID)
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddASN1OctetString(localKeyID) })
	})
	elems = append(elems, b.BytesOrPanic())
	slices.SortFunc(elems, bytes.Compare)
	return bytes.Join(elems, nil), nil
}

func safeBag(id asn1.ObjectIdentifier, value func(*cryptobyte.Builder), attrs []byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(id)
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), value)
		if len(attrs) > 0 {
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(attrs) })
		}
	})
	return b.BytesOrPanic()
}

func certBag(der, attrs []byte) []byte {
	return safeBag(oidCertBag, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidX509Cert)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1OctetString(der)
			})
		})
	}, attrs)
}

func sequenceOf(elems [][]byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, e := range elems {
			b.AddBytes(e)
		}
	})
	return b.Bytes()
}

// constantTimeEqual compares MACs.
func constantTimeEqual(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
