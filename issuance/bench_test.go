package issuance

import (
	"context"
	"crypto"
	crand "crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"golang.org/x/time/rate"
	"math/big"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"
)

// The issuance benchmarks (make bench): the whole pipeline (CSR checks,
// intent, template, lint, sign, record) through Issuer with the SoftHSM CA
// key and with a software key, the lint step alone, and raw
// x509.CreateCertificate with each key, and the smallstep authority alone
// (BenchmarkAuthorityFloor). Target: pipeline ≥ 0.5× raw CreateCertificate
// through SoftHSM.

// benchRequests makes n requests ahead of the timed loop: a CSR and a
// card key are the device's and the card's work, not the gateway's.
func benchRequests(b *testing.B, n int) []Request {
	reqs := make([]Request, n)
	for i := range reqs {
		reqs[i] = Request{Profile: DerivedPIVAuth, CSR: newCSR(b, p256(b)), Identity: identity(b)}
	}
	return reqs
}

// cpuTime is the CPU time this process has used (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchIssue issues b.N certificates through ca, from parallel goroutines
// (8 per core) when parallel, and reports
// certificates/s and the CPU milliseconds per certificate (the process's
// user and system time, all cores). The collector runs as in credgw serve
// (GOGC=400 unless GOGC is set: cmd/credgw's gatewayGOGC), which credgw
// bench enroll's in-process gateway does too.
func benchIssue(b *testing.B, ca *CA, parallel bool) {
	if os.Getenv("GOGC") == "" {
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	ctx := context.Background()
	reqs := benchRequests(b, b.N)
	var next atomic.Int64
	grouped, _ := ca.cfg.Store.(interface {
		GroupCommits() (commits, writes int64)
	})
	var commits0, writes0 int64
	if grouped != nil {
		commits0, writes0 = grouped.GroupCommits()
	}
	b.ResetTimer()
	cpu := cpuTime(b)
	issue := func() {
		if _, err := ca.Issue(ctx, reqs[next.Add(1)-1]); err != nil {
			b.Error(err)
		}
	}
	if parallel {
		b.SetParallelism(8) // 8 per core: c = 16 on two cores
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				issue()
			}
		})
	} else {
		for range b.N {
			issue()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	b.ReportMetric(float64((cpuTime(b)-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/cert")
	if grouped != nil {
		// Two writes a certificate (intent, record): the mean number of
		// them one SQLite transaction carried.
		if commits, writes := grouped.GroupCommits(); commits > commits0 {
			b.ReportMetric(float64(writes-writes0)/float64(commits-commits0), "writes/commit")
		}
	}
}

// softwareCA is a CA whose issuing key is a file (the embedded default).
func softwareCA(b *testing.B) *CA {
	dir := b.TempDir()
	res, err := InitCA(context.Background(), InitOptions{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	key, err := ReadKeyFile(res.IssuingKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	ca, err := NewCA(Config{Name: "soft", Chain: []*x509.Certificate{res.Issuing, res.Root}, Signer: key, Store: st, BaseURL: baseURL})
	if err != nil {
		b.Fatal(err)
	}
	return ca
}

func BenchmarkIssue(b *testing.B) {
	b.Run("softhsm", func(b *testing.B) { benchIssue(b, testCA, false) })
	b.Run("software", func(b *testing.B) { benchIssue(b, softwareCA(b), false) })
	// Both cores: what one gateway process does under load.
	b.Run("softhsm-parallel", func(b *testing.B) { benchIssue(b, testCA, true) })
	b.Run("software-parallel", func(b *testing.B) { benchIssue(b, softwareCA(b), true) })
}

func leafTemplate(b *testing.B) *x509.Certificate {
	k := p256(b)
	return &x509.Certificate{
		SerialNumber: big.NewInt(1 << 62), Subject: pkix.Name{CommonName: "bench"}, PublicKey: k.Public(),
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, SubjectKeyId: []byte{1, 2, 3, 4},
		OCSPServer: []string{"http://x/ocsp"}, CRLDistributionPoints: []string{"http://x/crl"},
	}
}

func BenchmarkLint(b *testing.B) {
	tmpl := leafTemplate(b)
	for b.Loop() {
		if _, _, err := testCA.linter.lint(tmpl, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lints/s")
}

func BenchmarkCreateCertificate(b *testing.B) {
	run := func(b *testing.B, ca *CA) {
		tmpl := leafTemplate(b)
		for b.Loop() {
			if _, err := x509.CreateCertificate(crand.Reader, tmpl, ca.cfg.Chain[0], tmpl.PublicKey, ca.cfg.Signer); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
	}
	b.Run("softhsm", func(b *testing.B) { run(b, testCA) })
	b.Run("software", func(b *testing.B) { run(b, softwareCA(b)) })
}

// floorModifier is the least an authority call needs: a serial and a
// validity (without one the authority issues notBefore == notAfter).
type floorModifier struct{}

func (floorModifier) Modify(cert *x509.Certificate, _ provisioner.SignOptions) error {
	cert.SerialNumber = big.NewInt(time.Now().UnixNano())
	cert.NotBefore, cert.NotAfter = time.Now(), time.Now().Add(time.Hour)
	return nil
}

// BenchmarkAuthorityFloor is smallstep's SignWithContext with the SoftHSM
// key and nothing of credgw's: the default leaf template, a serial and a
// validity; no profile, no lint, no store. It is the floor of any pipeline
// that must go through the authority: the authority and x509util each
// verify the CSR signature, and x509.CreateCertificate verifies what the
// HSM signed.
func BenchmarkAuthorityFloor(b *testing.B) {
	chain := testCA.cfg.Chain
	signer := testCA.cfg.Signer
	auth, err := authority.NewEmbedded(
		authority.WithX509SignerFunc(func() ([]*x509.Certificate, crypto.Signer, error) { return chain, signer, nil }),
		authority.WithX509RootCerts(chain[len(chain)-1]),
	)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		csr := newCSR(b, p256(b))
		b.StartTimer()
		if _, err := auth.SignWithContext(ctx, csr, provisioner.SignOptions{}, floorModifier{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkOCSPGet: RFC 5019 GETs for one good certificate through the
// responder's HTTP handler (no network), answered from the cache
// ("cached": one store read, no signature) and signed per request with the
// SoftHSM CA key ("signed": the responder before issue 16).
func BenchmarkOCSPGet(b *testing.B) {
	cert := issue(b, DerivedPIVAuth, p256(b), identity(b)).Certificate
	path := getPath(ocspRequestFor(b, cert.SerialNumber, testInit.Issuing))
	for _, mode := range []struct {
		name    string
		noCache bool
	}{{"cached", false}, {"signed", true}} {
		b.Run(mode.name, func(b *testing.B) {
			r := newReplica(b)
			r.CA.cfg.noOCSPCache = mode.noCache
			r.ocsp.signs = rate.NewLimiter(rate.Inf, 0) // what signing costs, not the budget
			r.serve("GET", path, nil)
			start := r.signatures()
			b.ResetTimer()
			for b.Loop() {
				if w := r.serve("GET", path, nil); w.Code != 200 || w.Body.Len() < 100 {
					b.Fatalf("HTTP %d, %d bytes", w.Code, w.Body.Len())
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "GETs/s")
			b.ReportMetric(float64(r.signatures()-start)/float64(b.N), "signatures/op")
		})
	}
}
