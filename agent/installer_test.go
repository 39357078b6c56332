package agent

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/credgw/credgw/activation/code"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/grpc"
)

// fakeStream replays a Redeem stream.
type fakeStream struct {
	grpc.ClientStream
	msgs []*credgwv1.RedeemResponse
}

func (s *fakeStream) Recv() (*credgwv1.RedeemResponse, error) {
	if len(s.msgs) == 0 {
		return nil, io.EOF
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

// TestInstallHook: Options.Install replaces the default install. It gets
// the parsed package, the device keys whose CSRs were sent and the Result
// that Redeem returns; Redeem confirms only after it returns nil, and not
// at all when it fails.
func TestInstallHook(t *testing.T) {
	raw := testPackage()
	sum := sha256.Sum256(raw)
	var sent []*credgwv1.CertificateRequest
	open := func(_ context.Context, csrs []*credgwv1.CertificateRequest, offset int64, _ string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
		sent = csrs
		return &fakeStream{msgs: []*credgwv1.RedeemResponse{
			{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{RedemptionId: "r1", TotalBytes: int64(len(raw))}}},
			{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{Offset: 0, Data: raw}}},
			{Event: &credgwv1.RedeemResponse_Done{Done: &credgwv1.Done{Sha256: sum[:]}}},
		}}, nil
	}
	confirmed := 0
	confirm := func(_ context.Context, rid string, got []byte) (string, error) {
		confirmed++
		if rid != "r1" || string(got) != string(sum[:]) {
			t.Errorf("confirm(%q, %x)", rid, got)
		}
		return "set", nil
	}
	o := Options{Events: func(Event) {}, MaxResumes: 1, OutDir: t.TempDir()}
	var got *Package
	o.Install = func(_ context.Context, p *Package) error {
		if confirmed != 0 {
			t.Error("confirmed before the install")
		}
		got = p
		if err := p.CheckManifest(); err != nil {
			return err
		}
		p.Result.Serials = append(p.Result.Serials, "01")
		return nil
	}
	res, err := fetchAndInstall(context.Background(), o, open, confirm)
	if err != nil {
		t.Fatal(err)
	}
	if confirmed != 1 || res.CredentialSetID != "set" || len(res.Serials) != 1 || got.Result != res {
		t.Errorf("confirmed %d times; result %+v", confirmed, res)
	}
	if got.Manifest().GetCredentialSetId() != "set" || len(got.Keys) != len(deviceProfiles) || len(got.KeyIDs) != 0 {
		t.Errorf("package: %+v", got)
	}
	for _, r := range sent {
		csr, err := x509.ParseCertificateRequest(r.GetCsrDer())
		if err != nil {
			t.Fatal(err)
		}
		if k := got.Keys[r.GetProfile()]; k == nil || !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
			t.Errorf("%v: the key is not the one the CSR sent", r.GetProfile())
		}
	}

	confirmed = 0
	o.Install = func(context.Context, *Package) error { return errors.New("no room") }
	if _, err := fetchAndInstall(context.Background(), o, open, confirm); err == nil || err.Error() != "no room" || confirmed != 0 {
		t.Errorf("failed install: %v, confirmed %d times", err, confirmed)
	}
}

// testPackage is a small well-formed package built as the gateway builds
// one.
func testPackage() []byte {
	b := code.NewPackage("set")
	b.Add("derived-piv-auth.crt", credgwv1.ItemKind_ITEM_KIND_CERTIFICATE, credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, "01", []byte("a certificate"), nil, 0)
	b.Add("chain.der", credgwv1.ItemKind_ITEM_KIND_CHAIN, credgwv1.Profile_PROFILE_UNSPECIFIED, "", nil, [][]byte{[]byte("a certificate")}, 0)
	raw, _, err := b.Marshal()
	if err != nil {
		panic(err)
	}
	return raw
}

// TestPackageSizeBounded: a gateway announcing a package larger than any
// credential package is refused at once, before the device buffers it.
func TestPackageSizeBounded(t *testing.T) {
	open := func(context.Context, []*credgwv1.CertificateRequest, int64, string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
		return &fakeStream{msgs: []*credgwv1.RedeemResponse{
			{Event: &credgwv1.RedeemResponse_Accepted{Accepted: &credgwv1.Accepted{RedemptionId: "r1", TotalBytes: 1 << 40}}},
			{Event: &credgwv1.RedeemResponse_Chunk{Chunk: &credgwv1.Chunk{Offset: 0, Data: make([]byte, 1024)}}},
		}}, nil
	}
	confirm := func(context.Context, string, []byte) (string, error) {
		t.Error("confirmed")
		return "", nil
	}
	o := Options{Events: func(Event) {}, MaxResumes: 1, OutDir: t.TempDir()}
	if _, err := fetchAndInstall(context.Background(), o, open, confirm); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("a 1 TiB package: %v, want a refusal naming the bound", err)
	}
}
