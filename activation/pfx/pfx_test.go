package pfx

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	"software.sslmate.com/src/go-pkcs12"
)

type fixture struct {
	ca      *x509.Certificate
	entries []Entry
}

var (
	fixOnce sync.Once
	fix     fixture
)

// testFixture: a CA and four leaves (RSA, P-256, P-384, Ed25519).
func testFixture(t testing.TB) fixture {
	t.Helper()
	fixOnce.Do(func() {
		caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pfx test CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
		if err != nil {
			panic(err)
		}
		fix.ca, _ = x509.ParseCertificate(der)
		rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
		p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		_, edKey, _ := ed25519.GenerateKey(rand.Reader)
		for i, k := range []crypto.Signer{rsaKey, p256, p384, edKey} {
			leaf := &x509.Certificate{SerialNumber: big.NewInt(int64(10 + i)), Subject: pkix.Name{CommonName: "leaf"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
			der, err := x509.CreateCertificate(rand.Reader, leaf, fix.ca, k.Public(), caKey)
			if err != nil {
				panic(err)
			}
			c, _ := x509.ParseCertificate(der)
			fix.entries = append(fix.entries, Entry{Key: k, Certificate: c, FriendlyName: "key " + string(rune('A'+i))})
		}
		fix.entries[0].FriendlyName = "encryption key (current) é"
	})
	return fix
}

func TestRoundTrip(t *testing.T) {
	f := testFixture(t)
	for _, n := range []int{1, 2, 4} {
		der, err := Encode(f.entries[:n], []*x509.Certificate{f.ca}, "s3cret-PIN", 0)
		if err != nil {
			t.Fatal(err)
		}
		got, others, err := Decode(der, "s3cret-PIN")
		if err != nil {
			t.Fatalf("%d keys: %v", n, err)
		}
		if len(got) != n || len(others) != 1 || !others[0].Equal(f.ca) {
			t.Fatalf("%d keys: got %d entries, %d other certificates", n, len(got), len(others))
		}
		for i, e := range got {
			want := f.entries[i]
			if !e.Certificate.Equal(want.Certificate) || e.FriendlyName != want.FriendlyName ||
				!e.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(want.Key.Public()) {
				t.Errorf("%d keys: entry %d differs (name %q)", n, i, e.FriendlyName)
			}
		}
	}
}

// go-pkcs12, the maintained implementation, reads a one-key file of ours
// (so the MAC and PBES2 are computed as it computes them), and we read
// what its Modern encoder writes.
func TestInteropGoPKCS12(t *testing.T) {
	f := testFixture(t)
	for _, e := range f.entries {
		der, err := Encode([]Entry{e}, []*x509.Certificate{f.ca}, "pässword", 1000)
		if err != nil {
			t.Fatal(err)
		}
		key, cert, chain, err := pkcs12.DecodeChain(der, "pässword")
		if err != nil {
			t.Fatalf("go-pkcs12 reads %T: %v", e.Key, err)
		}
		if !cert.Equal(e.Certificate) || len(chain) != 1 || !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(e.Key.Public()) {
			t.Errorf("go-pkcs12 read %T differently", e.Key)
		}
		theirs, err := pkcs12.Modern.Encode(e.Key, e.Certificate, []*x509.Certificate{f.ca}, "pässword")
		if err != nil {
			t.Fatal(err)
		}
		got, others, err := Decode(theirs, "pässword")
		if err != nil || len(got) != 1 || !got[0].Certificate.Equal(e.Certificate) || len(others) != 1 {
			t.Errorf("reading go-pkcs12 Modern (%T): %v", e.Key, err)
		}
	}
}

func openssl(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl is needed (make deps installs it)")
	}
	out, err := exec.Command(path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// OpenSSL opens a file of several keys, sees every key with its friendly
// name, and writes a file of several keys that Decode reads.
func TestInteropOpenSSL(t *testing.T) {
	f := testFixture(t)
	dir := t.TempDir()
	der, err := Encode(f.entries, []*x509.Certificate{f.ca}, "123456", 0)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ours.p12")
	os.WriteFile(p, der, 0o600)
	out := openssl(t, "pkcs12", "-in", p, "-passin", "pass:123456", "-info", "-nodes")
	if n := strings.Count(out, "-----BEGIN PRIVATE KEY-----"); n != len(f.entries) {
		t.Errorf("openssl sees %d keys, want %d:\n%s", n, len(f.entries), out)
	}
	if n := strings.Count(out, "-----BEGIN CERTIFICATE-----"); n != len(f.entries)+1 {
		t.Errorf("openssl sees %d certificates, want %d", n, len(f.entries)+1)
	}
	for _, want := range []string{"friendlyName: key B", "friendlyName: key D", "MAC: sha256", "PBES2, PBKDF2, AES-256-CBC"} {
		if !strings.Contains(out, want) {
			t.Errorf("openssl -info lacks %q:\n%s", want, out)
		}
	}
	// The key openssl takes when it takes one is the first: the current.
	first := openssl(t, "pkcs12", "-in", p, "-passin", "pass:123456", "-nocerts", "-nodes")
	if !strings.Contains(strings.SplitN(first, "-----BEGIN PRIVATE KEY-----", 2)[0], "encryption key (current)") {
		t.Errorf("the first key openssl prints is not the current one:\n%s", first)
	}
	// OpenSSL writes one key per -export; a two-key file needs a merge of
	// its PEM output, which is what -export does with several keys
	// present: it takes the one matching the certificate. So check
	// OpenSSL's own one-key export, with its defaults, reads back.
	pem := filepath.Join(dir, "one.pem")
	os.WriteFile(pem, []byte(openssl(t, "pkcs12", "-in", p, "-passin", "pass:123456", "-nodes")), 0o600)
	theirs := filepath.Join(dir, "theirs.p12")
	openssl(t, "pkcs12", "-export", "-in", pem, "-out", theirs, "-passout", "pass:654321", "-name", "from openssl")
	b, _ := os.ReadFile(theirs)
	got, _, err := Decode(b, "654321")
	if err != nil || len(got) != 1 || got[0].FriendlyName != "from openssl" {
		t.Fatalf("reading OpenSSL's export: %v (%d keys)", err, len(got))
	}
}

// fileWith wraps arbitrary safe contents in a MAC'd file, for rejections
// that Encode never writes.
func fileWith(t testing.TB, password string, iterations int, cis ...func(*cryptobyte.Builder)) []byte {
	t.Helper()
	var as cryptobyte.Builder
	as.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, ci := range cis {
			ci(b)
		}
	})
	pw, _ := bmpPassword(password)
	der, err := withMAC(rand.Reader, as.BytesOrPanic(), pw, iterations)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func dataCI(bags ...[]byte) func(*cryptobyte.Builder) {
	return func(b *cryptobyte.Builder) {
		sc, _ := sequenceOf(bags)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidData)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(sc) })
		})
	}
}

// encodeWith is a file whose PBKDF2 runs n times and whose MAC once.
func encodeWith(t *testing.T, n int) []byte {
	t.Helper()
	f := testFixture(t)
	der, err := encode(rand.Reader, f.entries[1:2], nil, "123456", n, 1)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func plainKeyBag(k crypto.Signer, attrs []byte) []byte {
	p8, _ := x509.MarshalPKCS8PrivateKey(k)
	return safeBag(oidKeyBag, func(b *cryptobyte.Builder) { b.AddBytes(p8) }, attrs)
}

func TestDecodeRefuses(t *testing.T) {
	f := testFixture(t)
	good, err := Encode(f.entries[1:2], nil, "123456", 0)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	legacy, _ := pkcs12.LegacyDES.Encode(f.entries[1].Key, f.entries[1].Certificate, nil, "123456")
	pbmac1, _ := pkcs12.Modern2026.Encode(f.entries[1].Key, f.entries[1].Certificate, nil, "123456")
	noMAC := func() []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(3)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidData)
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString([]byte{0x30, 0}) })
			})
		})
		return b.BytesOrPanic()
	}()
	idA := []byte("same id")
	attrsA, _ := attributes("a", idA)
	p256, p384 := f.entries[1], f.entries[2]
	maxIterations = 4096
	defer func() { maxIterations = MaxIterations }()
	for _, tc := range []struct {
		name, password, want string
		der                  []byte
	}{
		{"empty input", "123456", "malformed", nil},
		{"not ASN.1", "123456", "malformed", []byte("hello")},
		{"trailing data", "123456", "malformed", append(bytes.Clone(good), 0)},
		{"wrong password", "654321", ErrIncorrectPassword.Error(), good},
		{"a changed byte", "123456", "", flipped},
		{"no MAC", "", "no MAC", noMAC},
		{"legacy 3DES", "123456", "only PBES2", legacy},
		{"PBMAC1", "123456", "PBMAC1", pbmac1},
		{"MAC iterations beyond the bound", "123456", "iteration count", fileWith(t, "123456", 4097)},
		{"PBKDF2 iterations beyond the bound", "123456", "iteration count", encodeWith(t, 4097)},
		{"unknown bag", "123456", "bag type", fileWith(t, "123456", 1, dataCI(safeBag(oidData, func(b *cryptobyte.Builder) { b.AddASN1NULL() }, nil)))},
		{"key without certificate", "123456", "has no certificate", fileWith(t, "123456", 1, dataCI(plainKeyBag(p256.Key, nil)))},
		{"key and certificate that share an id but not a key", "123456", "is not the key", fileWith(t, "123456", 1,
			dataCI(plainKeyBag(p256.Key, attrsA), certBag(p384.Certificate.Raw, attrsA)))},
		{"certificate bag that is not a certificate", "123456", "certificate bag", fileWith(t, "123456", 1,
			dataCI(certBag([]byte{0x30, 0x03, 0x02, 0x01, 0x01}, nil)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Decode(tc.der, tc.password)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	f := testFixture(t)
	mismatched := Entry{Key: f.entries[1].Key, Certificate: f.entries[2].Certificate}
	for _, tc := range []struct {
		name     string
		entries  []Entry
		password string
		want     string
	}{
		{"no entries", nil, "123456", "no key"},
		{"no certificate", []Entry{{Key: f.entries[1].Key}}, "123456", "no key or no certificate"},
		{"key of another certificate", []Entry{mismatched}, "123456", "not the one its certificate certifies"},
		{"password beyond U+FFFF", f.entries[1:2], "pin😀", "U+FFFF"},
		{"friendly name beyond U+FFFF", []Entry{{Key: f.entries[1].Key, Certificate: f.entries[1].Certificate, FriendlyName: "😀"}}, "123456", "BMPString"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Encode(tc.entries, nil, tc.password, 1)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// The secret key material never appears in the file in the clear.
func TestNoKeyInTheClear(t *testing.T) {
	f := testFixture(t)
	der, err := Encode(f.entries, nil, "123456", 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range f.entries {
		p8, _ := x509.MarshalPKCS8PrivateKey(e.Key)
		if bytes.Contains(der, p8[len(p8)-32:]) {
			t.Errorf("%T: key bytes in the clear", e.Key)
		}
	}
}

func FuzzDecode(f *testing.F) {
	fx := testFixture(f)
	good, _ := Encode(fx.entries[1:3], []*x509.Certificate{fx.ca}, "1", 1)
	f.Add(good, "1")
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x03}, "")
	// Past the work budget: bags salted apart (see TestDecodeWorkBudget).
	var apart []func(*cryptobyte.Builder)
	for i := range 5 {
		apart = append(apart, encryptedCI(f, "1", []byte{byte(i)}, 64, []byte{0x30, 0}, false))
	}
	f.Add(fileWith(f, "1", 1, apart...), "1")
	// A mutated count must not make each run a second long, nor many
	// counts many seconds.
	maxIterations, maxWork = 64, 256
	f.Cleanup(func() { maxIterations, maxWork = MaxIterations, MaxWork })
	f.Fuzz(func(t *testing.T, der []byte, password string) {
		entries, _, err := Decode(der, password)
		if err != nil {
			if len(entries) != 0 {
				t.Fatal("entries with an error")
			}
			return
		}
		for _, e := range entries {
			if e.Key == nil || e.Certificate == nil {
				t.Fatal("an entry without key or certificate")
			}
		}
	})
}

// FuzzSafeContents reaches what the MAC guards in FuzzDecode: the bag
// parser and the PBES2 decryption.
func FuzzSafeContents(f *testing.F) {
	fx := testFixture(f)
	attrs, _ := attributes("name", []byte("id"))
	sc, _ := sequenceOf([][]byte{plainKeyBag(fx.entries[1].Key, attrs), certBag(fx.entries[1].Certificate.Raw, attrs)})
	f.Add(sc, "1")
	good, _ := encode(rand.Reader, fx.entries[1:2], nil, "1", 1, 1)
	f.Add([]byte(good), "1")
	maxIterations, maxWork = 64, 256
	f.Cleanup(func() { maxIterations, maxWork = MaxIterations, MaxWork })
	f.Fuzz(func(t *testing.T, data []byte, password string) {
		d := decoder{keys: map[string][]byte{}, password: password}
		err := d.safeContents(data)
		if d.work > maxWork {
			t.Fatalf("%d iterations derived, past the budget of %d", d.work, maxWork)
		}
		if err != nil {
			return
		}
		for _, k := range d.keyBags {
			if k.key == nil {
				t.Fatal("a key bag without a key")
			}
		}
		for _, c := range d.certs {
			if c.cert == nil {
				t.Fatal("a certificate bag without a certificate")
			}
		}
	})
}

// FuzzAuthSafe reaches, past a MAC made for each input, the authenticated
// safe (data and encrypted contents), the bags and the pairing of keys
// with certificates.
func FuzzAuthSafe(f *testing.F) {
	fx := testFixture(f)
	attrs, _ := attributes("name", []byte("id"))
	var as cryptobyte.Builder
	as.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		dataCI(plainKeyBag(fx.entries[1].Key, attrs), certBag(fx.entries[1].Certificate.Raw, attrs))(b)
	})
	f.Add(as.BytesOrPanic())
	f.Add([]byte{0x30, 0x00})
	var apart cryptobyte.Builder // five salts at 64: past a budget of 256
	apart.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for i := range 5 {
			encryptedCI(f, "1", []byte{byte(i)}, 64, []byte{0x30, 0}, false)(b)
		}
	})
	f.Add(apart.BytesOrPanic())
	maxIterations, maxWork = 64, 256
	f.Cleanup(func() { maxIterations, maxWork = MaxIterations, MaxWork })
	pw, _ := bmpPassword("1")
	f.Fuzz(func(t *testing.T, authSafe []byte) {
		der, err := withMAC(rand.Reader, authSafe, pw, 1)
		if err != nil {
			return
		}
		entries, _, err := Decode(der, "1")
		if err != nil {
			return
		}
		for _, e := range entries {
			if !e.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(e.Certificate.PublicKey) {
				t.Fatal("an entry whose key is not its certificate's")
			}
		}
	})
}

// decrypt refuses every PBES2 parameter it does not support, with a
// message that names it.
func TestDecryptRefuses(t *testing.T) {
	algo := func(kdf, prf, enc []int, iv []byte, keyLen int64) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidPBES2)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(kdf)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1OctetString([]byte("saltsalt"))
						b.AddASN1Int64(1)
						if keyLen != 0 {
							b.AddASN1Int64(keyLen)
						}
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(prf) })
					})
				})
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(enc)
					b.AddASN1OctetString(iv)
				})
			})
		})
		return b.BytesOrPanic()
	}
	iv := make([]byte, 16)
	block := make([]byte, 16)
	for _, tc := range []struct {
		name string
		algo []byte
		ct   []byte
		want string
	}{
		{"scrypt, not PBKDF2", algo([]int{1, 3, 6, 1, 4, 1, 11591, 4, 11}, oidHMACSHA256, oidAES256CBC, iv, 0), block, "key derivation"},
		{"PRF a digest, not an HMAC", algo(oidPBKDF2, oidSHA256, oidAES256CBC, iv, 0), block, "pseudo-random function"},
		{"PRF unknown", algo(oidPBKDF2, []int{1, 2, 3}, oidAES256CBC, iv, 0), block, "pseudo-random function"},
		{"3DES-CBC", algo(oidPBKDF2, oidHMACSHA256, []int{1, 2, 840, 113549, 3, 7}, make([]byte, 8), 0), block, "cipher"},
		{"key length not the cipher's", algo(oidPBKDF2, oidHMACSHA256, oidAES256CBC, iv, 16), block, "key length"},
		{"short IV", algo(oidPBKDF2, oidHMACSHA256, oidAES256CBC, iv[:8], 0), block, "IV"},
		{"no ciphertext", algo(oidPBKDF2, oidHMACSHA256, oidAES256CBC, iv, 0), nil, "whole AES blocks"},
		{"ciphertext not whole blocks", algo(oidPBKDF2, oidHMACSHA256, oidAES256CBC, iv, 0), block[:15], "whole AES blocks"},
		{"bad padding", algo(oidPBKDF2, oidHMACSHA256, oidAES128CBC, iv, 0), block, "does not decrypt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := decoder{keys: map[string][]byte{}, password: "1"}
			_, err := d.decrypt(tc.algo, tc.ct)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// Refusals of the file's frame: the PFX version, a public-key integrity
// mode, a MAC digest other than SHA-1 or SHA-256, a certificate bag of
// another type, a friendly name of odd length.
func TestDecodeRefusesFrame(t *testing.T) {
	frame := func(version int64, contentType []int, macOID []int, authSafe []byte) []byte {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(version)
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(contentType)
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString(authSafe) })
			})
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(macOID) })
					b.AddASN1OctetString(make([]byte, 32))
				})
				b.AddASN1OctetString([]byte("salt"))
			})
		})
		return b.BytesOrPanic()
	}
	empty := []byte{0x30, 0x00}
	otherCert := safeBag(oidCertBag, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier([]int{1, 2, 840, 113549, 1, 9, 22, 2}) // sdsiCertificate
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1OctetString([]byte("x")) })
		})
	}, nil)
	var oddName cryptobyte.Builder
	oddName.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidFriendlyName)
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(30), func(b *cryptobyte.Builder) { b.AddBytes([]byte{0, 'a', 0}) })
		})
	})
	f := testFixture(t)
	oddNamed := certBag(f.ca.Raw, oddName.BytesOrPanic())
	for _, tc := range []struct {
		name string
		der  []byte
		want string
	}{
		{"version 2", frame(2, oidData, oidSHA256, empty), "version 2"},
		{"signed, not MAC'd", frame(3, []int{1, 2, 840, 113549, 1, 7, 2}, oidSHA256, empty), "public-key"},
		{"SHA-512 MAC", frame(3, oidData, []int{2, 16, 840, 1, 101, 3, 4, 2, 3}, empty), "MAC digest"},
		{"certificate bag of another type", fileWith(t, "1", 1, dataCI(otherCert)), "certificate type"},
		{"friendly name of odd length", fileWith(t, "1", 1, dataCI(oddNamed)), "odd-length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Decode(tc.der, "1")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func BenchmarkEncode21Keys(b *testing.B) {
	f := testFixture(b)
	var entries []Entry
	for len(entries) < 21 {
		entries = append(entries, f.entries[1])
	}
	for b.Loop() {
		if _, err := Encode(entries, []*x509.Certificate{f.ca}, "0123456789abcdef0123456789abcdef0123456789a", 1000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGoPKCS12_21Files is what the key history cost before: one
// go-pkcs12 Modern file per key.
func BenchmarkGoPKCS12_21Files(b *testing.B) {
	f := testFixture(b)
	enc := pkcs12.Modern.WithIterations(1000)
	for b.Loop() {
		for range 21 {
			if _, err := enc.Encode(f.entries[1].Key, f.entries[1].Certificate, []*x509.Certificate{f.ca}, "0123456789abcdef0123456789abcdef0123456789a"); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestWriterFiles: the files of one Writer open with Decode and (one key
// each) with go-pkcs12, under the PIN iteration counts; a wrong password
// opens none; two Writers draw different salts.
func TestWriterFiles(t *testing.T) {
	f := testFixture(t)
	w, err := NewWriter("s3cret-PIN", PINIterations, PINMACIterations)
	if err != nil {
		t.Fatal(err)
	}
	all, err := w.Encode(f.entries, []*x509.Certificate{f.ca})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := Decode(all, "s3cret-PIN")
	if err != nil || len(got) != len(f.entries) {
		t.Fatalf("the whole history: %d keys, %v", len(got), err)
	}
	for i, e := range f.entries {
		one, err := w.Encode([]Entry{e}, []*x509.Certificate{f.ca})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Decode(one, "wrong PIN"); err != ErrIncorrectPassword {
			t.Fatalf("file %d opened with a wrong PIN: %v", i, err)
		}
		got, _, err := Decode(one, "s3cret-PIN")
		if err != nil || len(got) != 1 || got[0].FriendlyName != e.FriendlyName || !got[0].Certificate.Equal(e.Certificate) {
			t.Fatalf("file %d: %v", i, err)
		}
		key, cert, _, err := pkcs12.DecodeChain(one, "s3cret-PIN")
		if err != nil || !cert.Equal(e.Certificate) || !key.(crypto.Signer).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(e.Key.Public()) {
			t.Fatalf("go-pkcs12 reads file %d: %v", i, err)
		}
	}
	w2, err := NewWriter("s3cret-PIN", 1000, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(w.salt, w2.salt) || bytes.Equal(w.macSalt, w2.macSalt) || bytes.Equal(w.salt, w.macSalt) {
		t.Fatal("two Writers share a salt, or a Writer uses one salt twice")
	}
	if _, err := NewWriter("s3cret-PIN", MaxIterations+1, 1); err == nil {
		t.Fatal("a count Decode refuses was written")
	}
}

// BenchmarkKeystore21Keys is what the agent does when it installs a full
// key history (the current key and 20 earlier ones) under a PIN: one
// Writer at PINIterations/PINMACIterations, encryption.p12 with 21 keys,
// one file per key, and auth.p12 and signature.p12 (24 files).
func BenchmarkKeystore21Keys(b *testing.B) {
	f := testFixture(b)
	var entries []Entry
	for len(entries) < 21 {
		entries = append(entries, f.entries[1])
	}
	for b.Loop() {
		w, err := NewWriter("tr0ub4dor&3", PINIterations, PINMACIterations)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Encode(entries, []*x509.Certificate{f.ca}); err != nil {
			b.Fatal(err)
		}
		for _, e := range append(entries, entries[:2]...) {
			if _, err := w.Encode([]Entry{e}, []*x509.Certificate{f.ca}); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkEncodePIN is one file with its own derivations at the PIN
// counts: what each of the 24 files would cost without a shared Writer.
func BenchmarkEncodePIN(b *testing.B) {
	f := testFixture(b)
	for b.Loop() {
		if _, err := encode(rand.Reader, f.entries[1:2], []*x509.Certificate{f.ca}, "tr0ub4dor&3", PINIterations, PINMACIterations); err != nil {
			b.Fatal(err)
		}
	}
}

// encryptedCI is an EncryptedData content of the authenticated safe: plain
// (a SafeContents) under PBES2 with PBKDF2-HMAC-SHA-256 of salt and
// iterations and AES-256-CBC. With garbage, the ciphertext is random bytes
// instead, which no derivation opens: a refusal then shows that the
// derivation never ran (it would have said the bag does not decrypt).
func encryptedCI(t testing.TB, password string, salt []byte, iterations int, plain []byte, garbage bool) func(*cryptobyte.Builder) {
	t.Helper()
	iv := make([]byte, aes.BlockSize)
	rand.Read(iv)
	pad := aes.BlockSize - len(plain)%aes.BlockSize
	ct := append(bytes.Clone(plain), bytes.Repeat([]byte{byte(pad)}, pad)...)
	if garbage {
		rand.Read(ct)
	} else {
		key, err := pbkdf2.Key(sha256.New, password, salt, iterations, 32)
		if err != nil {
			t.Fatal(err)
		}
		block, _ := aes.NewCipher(key)
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
	}
	return func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oidEncryptedData)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(0)
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidData)
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
						b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ct) })
					})
				})
			})
		})
	}
}

// TestDecodeWorkBudget: the key-derivation work of one file is bounded as
// a whole, not bag by bag. A file of many EncryptedData contents, each
// with its own salt at a count each within maxIterations, is refused
// before the derivation that would pass maxWork; bags that share a salt
// cost one derivation; a file within the budget opens.
func TestDecodeWorkBudget(t *testing.T) {
	maxIterations, maxWork = 4096, 10_000
	defer func() { maxIterations, maxWork = MaxIterations, MaxWork }()
	empty := []byte{0x30, 0x00} // a SafeContents of no bags
	salt := func(i int) []byte { return []byte(fmt.Sprintf("salt number %04d", i)) }

	// MAC 1,000 + 4,000 + 4,000 = 9,000: within 10,000.
	within := fileWith(t, "1", 1000,
		encryptedCI(t, "1", salt(1), 4000, empty, false),
		encryptedCI(t, "1", salt(2), 4000, empty, false))
	if _, _, err := Decode(within, "1"); err != nil {
		t.Fatalf("a file within the budget: %v", err)
	}

	// A third salt at 4,000 would make 13,000: refused before its
	// derivation (its ciphertext is random: deriving would have failed
	// otherwise).
	over := fileWith(t, "1", 1000,
		encryptedCI(t, "1", salt(1), 4000, empty, false),
		encryptedCI(t, "1", salt(2), 4000, empty, false),
		encryptedCI(t, "1", salt(3), 4000, empty, true))
	_, _, err := Decode(over, "1")
	if !errors.Is(err, ErrTooMuchWork) {
		t.Fatalf("err = %v, want ErrTooMuchWork", err)
	}
	for _, want := range []string{"13000", "10000"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %s", err, want)
		}
	}

	// Many bags, each salted apart at a modest count: the attack.
	var many []func(*cryptobyte.Builder)
	for i := range 100 {
		many = append(many, encryptedCI(t, "1", salt(i), 100, empty, i >= 90))
	}
	if _, _, err := Decode(fileWith(t, "1", 1000, many...), "1"); !errors.Is(err, ErrTooMuchWork) {
		t.Fatalf("100 bags salted apart: err = %v, want ErrTooMuchWork", err)
	}

	// The MAC counts: a MAC of 4,000 leaves room for one bag of 4,000,
	// not two.
	if _, _, err := Decode(fileWith(t, "1", 4000,
		encryptedCI(t, "1", salt(1), 4000, empty, false),
		encryptedCI(t, "1", salt(2), 4000, empty, true)), "1"); !errors.Is(err, ErrTooMuchWork) {
		t.Fatalf("MAC and bags past the budget: err = %v, want ErrTooMuchWork", err)
	}

	// Bags that share a salt and count cost one derivation, as Encode
	// writes them: many of them fit.
	var shared []func(*cryptobyte.Builder)
	for range 100 {
		shared = append(shared, encryptedCI(t, "1", salt(7), 4000, empty, false))
	}
	if _, _, err := Decode(fileWith(t, "1", 4000, shared...), "1"); err != nil {
		t.Fatalf("100 bags under one salt: %v", err)
	}
}

// TestDecodeKeyHistoryWithinBudget: the largest files credgw writes open
// under the real bounds: a full key history (the current key and
// MaxKeyHistory = 20 earlier ones) as the agent writes it under a PIN and
// as the gateway writes it for transport; and MaxWork leaves room for a
// writer that salts every bag apart.
func TestDecodeKeyHistoryWithinBudget(t *testing.T) {
	if maxWork != MaxWork || maxIterations != MaxIterations {
		t.Fatal("a test left the bounds lowered")
	}
	const keys = 21
	if w := keys*PINIterations + PINIterations + PINMACIterations; w > MaxWork {
		t.Fatalf("%d keys at the PIN counts, every bag salted apart, need %d iterations; MaxWork is %d", keys, w, MaxWork)
	}
	if 3*MaxIterations > MaxWork {
		t.Fatal("MaxWork refuses a one-key file (keys' bag, certificates' bag, MAC) at MaxIterations")
	}
	f := testFixture(t)
	var entries []Entry
	for len(entries) < keys {
		entries = append(entries, f.entries[1+len(entries)%3])
	}
	w, err := NewWriter("s3cret-PIN", PINIterations, PINMACIterations)
	if err != nil {
		t.Fatal(err)
	}
	underPIN, err := w.Encode(entries, []*x509.Certificate{f.ca})
	if err != nil {
		t.Fatal(err)
	}
	transport, err := Encode(entries, []*x509.Certificate{f.ca}, "s3cret", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		der      []byte
		password string
	}{"under a PIN": {underPIN, "s3cret-PIN"}, "for transport": {transport, "s3cret"}} {
		got, _, err := Decode(tc.der, tc.password)
		if err != nil || len(got) != keys {
			t.Fatalf("%s: %d keys, %v", name, len(got), err)
		}
	}
}
