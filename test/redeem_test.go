package test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/agent"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func redeemReq(p code.Payload, password string) *credgwv1.RedeemRequest {
	req := &credgwv1.RedeemRequest{ActivationId: p.ID, Secret: p.Secret, Password: password}
	for _, prof := range []credgwv1.Profile{credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		req.Csrs = append(req.Csrs, &credgwv1.CertificateRequest{Profile: prof, CsrDer: der})
	}
	return req
}

// fetch reads a whole Redeem stream.
func fetch(client credgwv1.RedemptionClient, req *credgwv1.RedeemRequest) (pkg, sum []byte, rid string, err error) {
	s, err := client.Redeem(context.Background(), req)
	if err != nil {
		return nil, nil, "", err
	}
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return pkg, sum, rid, nil
		}
		if err != nil {
			return nil, nil, "", err
		}
		switch ev := m.GetEvent().(type) {
		case *credgwv1.RedeemResponse_Accepted:
			rid = ev.Accepted.GetRedemptionId()
		case *credgwv1.RedeemResponse_Chunk:
			pkg = append(pkg, ev.Chunk.GetData()...)
		case *credgwv1.RedeemResponse_Done:
			sum = ev.Done.GetSha256()
		}
	}
}

// TestRedemptionAgainstTheBinary: against `credgw serve` as a process, with
// the activation from `credgw enroll`: 50 parallel Redeem calls issue once;
// five wrong passwords lock an activation for good; a download cut half way
// resumes to the same SHA-256; the agent resumes by itself.
func TestRedemptionAgainstTheBinary(t *testing.T) {
	work := t.TempDir()
	dir, gw, conf := startDevGateway(t, work, nil)

	t.Run("50 parallel redeems issue once", func(t *testing.T) {
		out := filepath.Join(work, "race")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gw, conf, out)
		conn, err := agent.Dial(p)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := credgwv1.NewRedemptionClient(conn)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var pkgs [][]byte
		bad := map[codes.Code]int{}
		for i := 0; i < 50; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pkg, sum, _, err := fetch(client, redeemReq(p, password))
				mu.Lock()
				defer mu.Unlock()
				switch code := status.Code(err); {
				case err == nil:
					if got := sha256.Sum256(pkg); !bytes.Equal(got[:], sum) {
						t.Error("bytes do not match the SHA-256")
					}
					pkgs = append(pkgs, pkg)
				// Each call is a device of its own (new keys): once one
				// has the package, the others are refused it.
				case code == codes.FailedPrecondition || code == codes.Unavailable || code == codes.PermissionDenied:
				default:
					bad[code]++
				}
			}()
		}
		wg.Wait()
		if len(bad) > 0 || len(pkgs) != 1 {
			t.Fatalf("unexpected outcomes %v, %d packages, want 1", bad, len(pkgs))
		}
		var pp credgwv1.CredentialPackage
		if err := protoUnmarshal(pkgs[0], &pp); err != nil {
			t.Fatal(err)
		}
		if n := len(pp.GetManifest().GetItems()); n != 4 { // 2 certificates, 1 PKCS#12, the chain
			t.Fatalf("manifest of %d items", n)
		}
	})

	t.Run("five wrong passwords lock", func(t *testing.T) {
		out := filepath.Join(work, "lock")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gw, conf, out)
		conn, _ := agent.Dial(p)
		defer conn.Close()
		client := credgwv1.NewRedemptionClient(conn)
		wrong := "00000000"
		if wrong == password {
			wrong = "11111111"
		}
		for i := 0; i < 4; i++ {
			if _, _, _, err := fetch(client, redeemReq(p, wrong)); status.Code(err) != codes.PermissionDenied {
				t.Fatalf("wrong password %d: %v", i+1, err)
			}
		}
		if _, _, _, err := fetch(client, redeemReq(p, wrong)); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("fifth wrong password: %v", err)
		}
		if _, _, _, err := fetch(client, redeemReq(p, password)); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("right password after lockout: %v", err)
		}
		// The agent says so clearly, and writes nothing.
		dev := filepath.Join(out, "device")
		_, err := agent.Redeem(context.Background(), agent.Options{Payload: p, Password: password, OutDir: dev, KeystorePIN: "correct horse"})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "enroll again") {
			t.Fatalf("agent: %v", err)
		}
		if entries, _ := os.ReadDir(dev); len(entries) != 0 {
			t.Fatalf("the agent wrote %d files for a locked activation", len(entries))
		}
	})

	t.Run("cut and resumed", func(t *testing.T) {
		out := filepath.Join(work, "resume")
		os.MkdirAll(out, 0o700)
		p, password := enrollWithCLI(t, dir, gw, conf, out)
		res, err := agent.Redeem(context.Background(), agent.Options{Payload: p, Password: password, OutDir: filepath.Join(out, "device"),
			KeystorePIN: "correct horse", CutAfterBytes: 3000})
		if err != nil {
			t.Fatal(err)
		}
		if res.Resumes != 1 || res.CredentialSetID == "" {
			t.Fatalf("resumes %d, set %q", res.Resumes, res.CredentialSetID)
		}
	})
}
