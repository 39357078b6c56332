package server_test

//lint:file-ignore SA1019 the tests encrypt to RSA key management keys (9D) with PKCS#1 v1.5, as PIV does

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/agent"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"github.com/credgw/credgw/store"
	"golang.org/x/crypto/ocsp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// enrolled is one enrollment of a fresh card.
type enrolled struct {
	resp    *credgwv1.CreateEnrollmentResponse
	payload code.Payload
}

func enrollCard(t *testing.T) enrolled {
	t.Helper()
	return enrollWith(t, newCard(t, hsmsim.CardSpec{Email: "holder@example.com"}))
}

// enrollWith enrolls the holder of card c (again).
func enrollWith(t *testing.T, c *card) enrolled {
	t.Helper()
	conn := portalConn(t)
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := credgwv1.NewEnrollmentClient(conn).CreateEnrollment(context.Background(), &credgwv1.CreateEnrollmentRequest{
		SessionToken: sess.GetSessionToken(), IdentityName: "Entrust Derived Cred"})
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret([]byte(resp.GetPassword()))
	// The PNG decodes to the payload the agent accepts.
	text, err := agent.DecodeQR(resp.GetQrPng())
	if err != nil || text != resp.GetQrPayload() {
		t.Fatalf("QR PNG decodes to %q (%v), payload %q", text, err, resp.GetQrPayload())
	}
	p, err := code.ParsePayload(text)
	if err != nil {
		t.Fatal(err)
	}
	rememberSecret(p.Secret)
	return enrolled{resp: resp, payload: p}
}

// redeemRequest makes device keys and CSRs.
func redeemRequest(t *testing.T, e enrolled, password string) *credgwv1.RedeemRequest {
	t.Helper()
	req := &credgwv1.RedeemRequest{ActivationId: e.payload.ID, Secret: e.payload.Secret, Password: password}
	for _, p := range []credgwv1.Profile{credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE} {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		req.Csrs = append(req.Csrs, &credgwv1.CertificateRequest{Profile: p, CsrDer: der})
	}
	return req
}

type download struct {
	redemptionID string
	pkg          []byte
	sum          []byte
	total        int64
}

// readStream reads a Redeem stream, stopping after stopAt bytes if > 0.
func readStream(ctx context.Context, client credgwv1.RedemptionClient, req *credgwv1.RedeemRequest, stopAt int64) (*download, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := client.Redeem(ctx, req)
	if err != nil {
		return nil, err
	}
	d := &download{}
	for {
		m, err := s.Recv()
		if err == io.EOF {
			return d, nil
		}
		if err != nil {
			return d, err
		}
		switch ev := m.GetEvent().(type) {
		case *credgwv1.RedeemResponse_Accepted:
			d.redemptionID, d.total = ev.Accepted.GetRedemptionId(), ev.Accepted.GetTotalBytes()
		case *credgwv1.RedeemResponse_Chunk:
			if len(ev.Chunk.GetData()) > 32<<10 {
				return d, errors.New("chunk over 32 KiB")
			}
			d.pkg = append(d.pkg, ev.Chunk.GetData()...)
			if stopAt > 0 && int64(len(d.pkg)) >= stopAt {
				// The connection drops here: keep what arrived before
				// the cut (a package smaller than one chunk is cut
				// inside it).
				d.pkg = d.pkg[:stopAt]
				return d, nil
			}
		case *credgwv1.RedeemResponse_Done:
			d.sum = ev.Done.GetSha256()
		}
	}
}

func setSerials(t *testing.T, setID string) int {
	t.Helper()
	recs, err := gwStore.CertificatesOfSet(context.Background(), setID)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// TestRedeemRaceIssuesOnce: 50 parallel Redeem calls with the right password
// on one activation, each from a device of its own: exactly one issuance,
// delivered to one device; every other call gets FailedPrecondition,
// Unavailable (still issuing) or PermissionDenied (the package is another
// device's: a resume must carry the keys of the first request).
func TestRedeemRaceIssuesOnce(t *testing.T) {
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var full [][]byte
	codesSeen := map[codes.Code]int{}
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := readStream(context.Background(), client, redeemRequest(t, e, e.resp.GetPassword()), 0)
			mu.Lock()
			defer mu.Unlock()
			codesSeen[status.Code(err)]++
			if err == nil {
				if got := sha256.Sum256(d.pkg); !bytes.Equal(got[:], d.sum) {
					t.Error("a stream's bytes do not match its SHA-256")
				}
				full = append(full, d.pkg)
			}
		}()
	}
	wg.Wait()
	if len(full) != 1 {
		t.Fatalf("%d devices got the package, want 1: %v", len(full), codesSeen)
	}
	for c := range codesSeen {
		if c != codes.OK && c != codes.FailedPrecondition && c != codes.Unavailable && c != codes.PermissionDenied {
			t.Fatalf("unexpected code %v (%v)", c, codesSeen)
		}
	}
	if n := setSerials(t, e.resp.GetCredentialSetId()); n != 3 {
		t.Fatalf("%d certificates issued for one activation, want 3", n)
	}
}

func TestWrongPasswordsLock(t *testing.T) {
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	wrong := "00000000"
	if wrong == e.resp.GetPassword() {
		wrong = "11111111"
	}
	for left := 4; left >= 1; left-- {
		_, err := readStream(context.Background(), client, redeemRequest(t, e, wrong), 0)
		wantCode(t, err, codes.PermissionDenied)
		var got string
		for _, d := range status.Convert(err).Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				got = info.GetMetadata()["attempts_left"]
			}
		}
		if want := string(rune('0' + left)); got != want {
			t.Fatalf("attempts_left %q, want %s", got, want)
		}
	}
	_, err := readStream(context.Background(), client, redeemRequest(t, e, wrong), 0)
	wantCode(t, err, codes.ResourceExhausted)
	// The right password does not open a locked activation.
	_, err = readStream(context.Background(), client, redeemRequest(t, e, e.resp.GetPassword()), 0)
	wantCode(t, err, codes.ResourceExhausted)
	if n := setSerials(t, e.resp.GetCredentialSetId()); n != 0 {
		t.Fatalf("%d certificates issued for a locked activation", n)
	}
}

func TestRedeemRefusals(t *testing.T) {
	client := credgwv1.NewRedemptionClient(dial(t))
	ctx := context.Background()
	e := enrollCard(t)
	unknown := redeemRequest(t, e, e.resp.GetPassword())
	unknown.ActivationId = "AAAAAAAAAAAAAAAAAAAAAA"
	_, errUnknown := readStream(ctx, client, unknown, 0)
	badSecret := redeemRequest(t, e, e.resp.GetPassword())
	badSecret.Secret = bytes.Repeat([]byte{9}, 32)
	_, errSecret := readStream(ctx, client, badSecret, 0)
	wantCode(t, errUnknown, codes.Unauthenticated)
	wantCode(t, errSecret, codes.Unauthenticated)
	if status.Convert(errUnknown).Message() != status.Convert(errSecret).Message() {
		t.Fatal("the messages tell an unknown id from a wrong secret")
	}
	missing := redeemRequest(t, e, e.resp.GetPassword())
	missing.Csrs = missing.Csrs[:1]
	_, err := readStream(ctx, client, missing, 0)
	wantCode(t, err, codes.InvalidArgument)
	// The refused request left the activation redeemable.
	if _, err := readStream(ctx, client, redeemRequest(t, e, e.resp.GetPassword()), 0); err != nil {
		t.Fatalf("after a refused request: %v", err)
	}
	// Expiry (injected clock): a new activation, 11 minutes later.
	e2 := enrollCard(t)
	clockOffset.Add(int64(11 * time.Minute))
	_, err = readStream(ctx, client, redeemRequest(t, e2, e2.resp.GetPassword()), 0)
	clockOffset.Add(-int64(11 * time.Minute))
	wantCode(t, err, codes.FailedPrecondition)
}

// TestResumeAfterCut: a stream cut half way and resumed gives identical
// bytes and SHA-256 and issues nothing again; Confirm completes it.
func TestResumeAfterCut(t *testing.T) {
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	ctx := context.Background()
	req := redeemRequest(t, e, e.resp.GetPassword())
	first, err := readStream(ctx, client, req, 2000)
	if err != nil || first.total == 0 || int64(len(first.pkg)) >= first.total {
		t.Fatalf("first part: %v, %d of %d bytes", err, len(first.pkg), first.total)
	}
	if first.total < 4000 {
		t.Fatalf("package of %d bytes: the cut is not half way", first.total)
	}
	req.ResumeOffset = int64(len(first.pkg))
	rest, err := readStream(ctx, client, req, 0)
	if err != nil {
		t.Fatal(err)
	}
	whole := append(first.pkg, rest.pkg...)
	if sum := sha256.Sum256(whole); !bytes.Equal(sum[:], rest.sum) || rest.redemptionID != first.redemptionID {
		t.Fatal("the resumed package is not the same")
	}
	if n := setSerials(t, e.resp.GetCredentialSetId()); n != 3 {
		t.Fatalf("%d certificates after a resume, want 3", n)
	}
	if _, err := client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rest.redemptionID, Secret: e.payload.Secret, Sha256: make([]byte, 32)}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("confirm with a wrong hash: %v", err)
	}
	cr, err := client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rest.redemptionID, Secret: e.payload.Secret, Sha256: rest.sum})
	if err != nil || len(cr.GetSerials()) != 3 {
		t.Fatalf("confirm: %v %v", cr, err)
	}
	_, err = readStream(ctx, client, req, 0)
	wantCode(t, err, codes.FailedPrecondition) // single use: the package is gone
}

// TestUnconfirmedRevoked: a package not confirmed within the window: the
// sweep revokes its certificates and OCSP says so.
func TestUnconfirmedRevoked(t *testing.T) {
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	d, err := readStream(context.Background(), client, redeemRequest(t, e, e.resp.GetPassword()), 0)
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := gwStore.CertificatesOfSet(context.Background(), e.resp.GetCredentialSetId())
	clockOffset.Add(int64(61 * time.Minute))
	gw.Sweep(context.Background())
	// Its notice is due at the shifted time: send it before the clock
	// goes back.
	if _, _, err := gw.DeliverNotifications(context.Background()); err != nil {
		t.Fatal(err)
	}
	clockOffset.Add(-int64(61 * time.Minute))
	ca := gw.CA()
	for _, r := range recs {
		cert, _ := x509.ParseCertificate(r.DER)
		req, _ := ocsp.CreateRequest(cert, ca.Chain()[0], &ocsp.RequestOptions{Hash: crypto.SHA256})
		resp, err := http.Post(cert.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		or, err := ocsp.ParseResponseForCert(body, cert, ca.Chain()[0])
		if err != nil || or.Status != ocsp.Revoked {
			t.Fatalf("%s: OCSP %v %v", r.Profile, or, err)
		}
		// Nothing replaced it (RFC 5280 §5.3.1 superseded): the package
		// was never taken into use.
		if or.RevocationReason != ocsp.CessationOfOperation {
			t.Fatalf("%s: revoked for reason %d, want cessationOfOperation (%d)", r.Profile, or.RevocationReason, ocsp.CessationOfOperation)
		}
	}
	_, err = client.Confirm(context.Background(), &credgwv1.ConfirmRequest{RedemptionId: d.redemptionID, Secret: e.payload.Secret, Sha256: d.sum})
	wantCode(t, err, codes.FailedPrecondition)
	// The holder hears that the delivery failed.
	mails.waitForText(t, "key-delivery", "holder@example.com", "never confirmed", e.resp.GetCredentialSetId())
}

// TestAgentRedeems: the reference agent against the running gateway,
// anchored at the CA's root as a device is (its certificates pass the
// agent's profile and same-person checks as issued).
func TestAgentRedeems(t *testing.T) {
	e := enrollCard(t)
	dir := t.TempDir()
	anchors, err := server.ReadCertificateFiles([]string{cfg.Path(cfg.CA.ChainFiles[len(cfg.CA.ChainFiles)-1])})
	if err != nil {
		t.Fatal(err)
	}
	res, err := agent.Redeem(context.Background(), agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
		OutDir: dir, KeystorePIN: "correct horse", TrustAnchors: anchors})
	if err != nil {
		t.Fatal(err)
	}
	if res.CredentialSetID != e.resp.GetCredentialSetId() || len(res.Files) < 7 || res.KeyHistory != 1 {
		t.Fatalf("%+v", res)
	}
	if !strings.Contains(strings.Join(res.Files, " "), "encryption.p12") {
		t.Fatalf("files %v", res.Files)
	}
}

// TestAgentWrongAnchorSpendsNothing: a device given the wrong trust
// anchor refused the download after the gateway had issued it, and its
// keys were gone with it, so the code could not be used again. The device
// now sends its anchors and the gateway refuses before anything is issued
// (no certificate, no attempt counted): with the right anchor the same
// code then redeems.
func TestAgentWrongAnchorSpendsNothing(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	foreign, err := server.ReadCertificateFiles([]string{dev.CAFile}) // the TLS CA: not the issuing CA's root
	if err != nil {
		t.Fatal(err)
	}
	_, err = agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
		OutDir: t.TempDir(), KeystorePIN: "correct horse", TrustAnchors: foreign})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "nothing was issued") {
		t.Fatalf("redeem under a foreign anchor: %v, want FailedPrecondition saying nothing was issued", err)
	}
	if recs, err := gwStore.CertificatesOfSet(ctx, e.resp.GetCredentialSetId()); err != nil || len(recs) != 0 {
		t.Fatalf("%d certificates issued (%v) for a device that trusts another root", len(recs), err)
	}
	right, err := server.ReadCertificateFiles([]string{cfg.Path(cfg.CA.ChainFiles[len(cfg.CA.ChainFiles)-1])})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
		OutDir: t.TempDir(), KeystorePIN: "correct horse", TrustAnchors: right}); err != nil {
		t.Fatalf("the same code with the right anchor: %v", err)
	}
	// Anchors that are not certificates are a bad request.
	stream, err := credgwv1.NewRedemptionClient(dial(t)).Redeem(ctx, &credgwv1.RedeemRequest{ActivationId: "x", Secret: []byte{1},
		TrustAnchors: [][]byte{[]byte("not a certificate")}})
	if err == nil {
		_, err = stream.Recv()
	}
	wantCode(t, err, codes.InvalidArgument)
}

// TestKeyHistoryInOneFile: each enrollment of a person brings the earlier
// escrowed keys along. The device gets them in one encryption.p12 under the
// keystore PIN: the current key first, then the history newest first, each
// with its certificate and a friendly name that says which it is; and each
// key again in a file of its own (agent.KeyFileName). A key revoked for
// key compromise (the first, after round 2) keeps the gateway's mark in
// its name on the device (code.CompromisedMark).
func TestKeyHistoryInOneFile(t *testing.T) {
	card := newCard(t, hsmsim.CardSpec{Email: "history@example.com"})
	var serials []string // current key-management serial of each round
	for round := 1; round <= 3; round++ {
		e := enrollWith(t, card)
		dir := t.TempDir()
		res, err := agent.Redeem(context.Background(), agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
			OutDir: dir, KeystorePIN: "correct horse"})
		if err != nil {
			t.Fatal(err)
		}
		if res.KeyHistory != round {
			t.Fatalf("round %d: %d keys delivered", round, res.KeyHistory)
		}
		serials = append(serials, res.Certificates[credgwv1.Profile_PROFILE_KEY_MANAGEMENT].SerialNumber.Text(16))
		data, err := os.ReadFile(filepath.Join(dir, "encryption.p12"))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := pfx.Decode(data, "not the PIN"); !errors.Is(err, pfx.ErrIncorrectPassword) {
			t.Fatalf("opened with a wrong PIN: %v", err)
		}
		entries, chain, err := pfx.Decode(data, "correct horse")
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != round || len(chain) == 0 {
			t.Fatalf("round %d: encryption.p12 holds %d keys and %d CA certificates", round, len(entries), len(chain))
		}
		for i, en := range entries {
			if want := serials[round-1-i]; en.Certificate.SerialNumber.Text(16) != want {
				t.Errorf("round %d: key %d is %s, want %s (newest first)", round, i, en.Certificate.SerialNumber.Text(16), want)
			}
			if current := strings.Contains(en.FriendlyName, "(current)"); current != (i == 0) {
				t.Errorf("round %d: key %d is named %q", round, i, en.FriendlyName)
			}
			if marked, want := strings.HasSuffix(en.FriendlyName, code.CompromisedMark), round == 3 && i == 2; marked != want {
				t.Errorf("round %d: key %d is named %q: marked compromised %v, want %v", round, i, en.FriendlyName, marked, want)
			}
		}
		if round == 2 {
			admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
			if _, err := admin.RevokeCertificate(context.Background(), &credgwv1.RevokeCertificateRequest{Serial: serials[0],
				Reason: credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE}); err != nil {
				t.Fatal(err)
			}
		}
		// And one file per key, current first, for readers that take one
		// key of a file: each holds that key under the keystore PIN.
		if matches, _ := filepath.Glob(filepath.Join(dir, "encryption*.p12")); len(matches) != 1+round || len(res.KeyHistoryFiles) != round {
			t.Fatalf("round %d: %v and KeyHistoryFiles %v, want encryption.p12 and %d one-key files", round, matches, res.KeyHistoryFiles, round)
		}
		for i, name := range res.KeyHistoryFiles {
			if want := agent.KeyFileName(i, entries[i].Certificate); name != want {
				t.Errorf("round %d: key %d is in %s, want %s", round, i, name, want)
			}
			one, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := pfx.Decode(one, "correct horse")
			if err != nil || len(got) != 1 || !got[0].Certificate.Equal(entries[i].Certificate) || got[0].FriendlyName != entries[i].FriendlyName {
				t.Errorf("round %d: %s: %v", round, name, err)
			}
		}
	}
}

// TestExpiredKeyInHistory: an escrowed key whose certificate has expired
// still comes in the key history (old mail needs it), and the agent takes
// it: its chain is checked as of when it was issued. The device's clock
// is set just past the first certificate's end; the gateway's moves a few
// seconds, so that the second certificate ends after it.
func TestExpiredKeyInHistory(t *testing.T) {
	card := newCard(t, hsmsim.CardSpec{Email: "expired.history@example.com"})
	var deviceNow func() time.Time
	redeem := func() (*agent.Result, error) {
		t.Helper()
		e := enrollWith(t, card)
		return agent.Redeem(context.Background(), agent.Options{Payload: e.payload, Password: e.resp.GetPassword(),
			OutDir: t.TempDir(), KeystorePIN: "correct horse", Now: deviceNow})
	}
	res, err := redeem()
	if err != nil {
		t.Fatal(err)
	}
	first := res.Certificates[credgwv1.Profile_PROFILE_KEY_MANAGEMENT]
	clockOffset.Add(int64(3 * time.Second))
	defer clockOffset.Add(-int64(3 * time.Second))
	deviceNow = func() time.Time { return first.NotAfter.Add(time.Second) }
	res, err = redeem()
	if err != nil {
		t.Fatal(err)
	}
	if cur := res.Certificates[credgwv1.Profile_PROFILE_KEY_MANAGEMENT]; res.KeyHistory != 2 || !cur.NotAfter.After(deviceNow()) {
		t.Fatalf("%d keys delivered (want the current one and the expired one); current ends %s", res.KeyHistory, cur.NotAfter)
	}
}

// TestListAndRevokeOwnCredentials: the person sees their credential sets
// and revokes one (lost phone); another person's set is not theirs.
func TestListAndRevokeOwnCredentials(t *testing.T) {
	ctx := context.Background()
	conn := portalConn(t)
	c := newCard(t, hsmsim.CardSpec{Email: "owner@example.com"})
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	en, err := credgwv1.NewEnrollmentClient(conn).CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "Phone"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := code.ParsePayload(en.GetQrPayload())
	rememberSecret(p.Secret)
	if _, err := agent.Redeem(ctx, agent.Options{Payload: p, Password: en.GetPassword(), OutDir: t.TempDir(), KeystorePIN: "correct horse",
		Device: &credgwv1.DeviceInfo{Model: "test phone"}}); err != nil {
		t.Fatal(err)
	}
	ec := credgwv1.NewEnrollmentClient(conn)
	list, err := ec.ListCredentials(ctx, &credgwv1.ListCredentialsRequest{SessionToken: sess.GetSessionToken()})
	if err != nil || len(list.GetCredentialSets()) != 1 {
		t.Fatalf("%v %v", list, err)
	}
	set := list.GetCredentialSets()[0]
	if set.GetState() != credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_ACTIVE || len(set.GetCertificates()) != 3 || set.GetIdentityName() != "Phone" ||
		set.GetDevice().GetModel() != "test phone" {
		t.Fatalf("%+v", set)
	}
	other := enrollCard(t)
	_, err = ec.RevokeCredential(ctx, &credgwv1.RevokeCredentialRequest{SessionToken: sess.GetSessionToken(), CredentialSetId: other.resp.GetCredentialSetId()})
	wantCode(t, err, codes.NotFound)
	// A reason the CA refuses for a derived credential (certificateHold,
	// cACompromise) is refused before anything changes: the set stays
	// active and its certificates good (issue 14, point 10).
	for _, bad := range []credgwv1.RevocationReason{6, 2, 7} {
		_, err = ec.RevokeCredential(ctx, &credgwv1.RevokeCredentialRequest{SessionToken: sess.GetSessionToken(), CredentialSetId: set.GetId(), Reason: bad})
		wantCode(t, err, codes.InvalidArgument)
		after, err := ec.ListCredentials(ctx, &credgwv1.ListCredentialsRequest{SessionToken: sess.GetSessionToken()})
		if err != nil {
			t.Fatal(err)
		}
		if got := after.GetCredentialSets()[0]; got.GetState() != credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_ACTIVE {
			t.Fatalf("reason %d: the refused revocation left the set %v", bad, got.GetState())
		}
		for _, c := range after.GetCredentialSets()[0].GetCertificates() {
			if c.GetStatus() != credgwv1.CertificateStatus_CERTIFICATE_STATUS_GOOD {
				t.Fatalf("reason %d: certificate %s is %v", bad, c.GetSerial(), c.GetStatus())
			}
		}
	}
	rv, err := ec.RevokeCredential(ctx, &credgwv1.RevokeCredentialRequest{SessionToken: sess.GetSessionToken(), CredentialSetId: set.GetId(),
		Reason: credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range rv.GetCredentialSet().GetCertificates() {
		if c.GetStatus() != credgwv1.CertificateStatus_CERTIFICATE_STATUS_REVOKED {
			t.Fatalf("certificate %s is %v", c.GetSerial(), c.GetStatus())
		}
	}
	if rv.GetCredentialSet().GetState() != credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_REVOKED {
		t.Fatalf("set state %v", rv.GetCredentialSet().GetState())
	}
}

// TestAgentKeystoreOnToken: with a PKCS#11 keystore the device keys are
// made on the token, the escrowed encryption keys are stored on it, the
// certificates beside them, no PKCS#12 is written, and every key works as
// its certificate says. A second enrollment of the same person into the
// same keystore brings the first key again as history: it is not stored
// twice, and only the new key is labelled current.
func TestAgentKeystoreOnToken(t *testing.T) {
	ctx := context.Background()
	label := fmt.Sprintf("device-%d", cardSeq.Add(1))
	if _, err := module.InitToken(label, []byte("12345678"), []byte("87654321")); err != nil {
		t.Fatal(err)
	}
	tok, err := module.OpenToken(ctx, pkcs11.TokenConfig{Label: label, PIN: []byte("87654321")})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	card := newCard(t, hsmsim.CardSpec{Email: "holder@example.com"})
	var kmSerials []string
	for round := 1; round <= 2; round++ {
		e := enrollWith(t, card)
		dir := t.TempDir()
		res, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: dir,
			KeystorePIN: "correct horse", Keystore: tok})
		if err != nil {
			t.Fatal(err)
		}
		if res.KeyHistory != round {
			t.Fatalf("round %d: %d escrowed keys delivered", round, res.KeyHistory)
		}
		kmSerials = append(kmSerials, res.Certificates[credgwv1.Profile_PROFILE_KEY_MANAGEMENT].SerialNumber.Text(16))
		for _, f := range res.Files {
			if strings.HasSuffix(f, ".p12") {
				t.Fatalf("a PKCS#12 was written beside a keystore token: %s", f)
			}
		}
	}
	objs, err := tok.FindObjects(ctx, pkcs11.Query{Class: pkcs11.ClassCertificate})
	if err != nil || len(objs) != 6 { // 2 × (auth, signature) + 2 encryption
		t.Fatalf("certificates on the token: %v %v", objs, err)
	}
	if keys, err := tok.FindObjects(ctx, pkcs11.Query{Class: pkcs11.ClassPrivateKey}); err != nil || len(keys) != 6 {
		t.Fatalf("private keys on the token: %v %v", keys, err)
	}
	var current []string
	for _, o := range objs {
		cert, err := tok.Certificate(ctx, o.ID, "")
		if err != nil {
			t.Fatal(err)
		}
		key, err := tok.Signer(ctx, pkcs11.KeyRef{ID: o.ID})
		if err != nil {
			t.Fatal(err)
		}
		if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
			t.Fatalf("%s: the token key is not the certificate's", o.Label)
		}
		if cert.KeyUsage&x509.KeyUsageDigitalSignature != 0 {
			d := sha256.Sum256([]byte("device"))
			sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
			if err != nil || !ecdsa.VerifyASN1(cert.PublicKey.(*ecdsa.PublicKey), d[:], sig) {
				t.Fatalf("%s: token key does not sign for its certificate: %v", o.Label, err)
			}
			continue
		}
		if o.Label == "credgw encryption certificate (current)" {
			current = append(current, cert.SerialNumber.Text(16))
		}
		if pub, ok := cert.PublicKey.(*rsa.PublicKey); ok {
			ct, _ := rsa.EncryptPKCS1v15(rand.Reader, pub, []byte("a content key"))
			if pt, err := key.Decrypt(rand.Reader, ct, nil); err != nil || string(pt) != "a content key" {
				t.Fatalf("%s: the escrowed key does not decrypt on the token: %v", o.Label, err)
			}
		}
	}
	if len(current) != 1 || current[0] != kmSerials[1] {
		t.Fatalf("labelled current: %v, want only the second enrollment's %s", current, kmSerials[1])
	}
}

// TestWrongPasswordsWhileRedeeming: a resume needs the password too, and
// wrong ones from the device (its keys) count there as well: the fifth
// locks the activation, deletes the waiting package and revokes what it
// carried. (Other keys are refused before the password: they could never
// resume the package, and a photo of the QR code must not lock it.)
func TestWrongPasswordsWhileRedeeming(t *testing.T) {
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	req := redeemRequest(t, e, e.resp.GetPassword())
	if _, err := readStream(context.Background(), client, req, 0); err != nil {
		t.Fatal(err)
	}
	wrong := "00000000"
	if wrong == e.resp.GetPassword() {
		wrong = "11111111"
	}
	_, err := readStream(context.Background(), client, redeemRequest(t, e, wrong), 0)
	wantCode(t, err, codes.PermissionDenied) // other keys: refused, nothing counted
	guess := proto.Clone(req).(*credgwv1.RedeemRequest)
	guess.Password = wrong
	for i := 0; i < 4; i++ {
		_, err := readStream(context.Background(), client, guess, 0)
		wantCode(t, err, codes.PermissionDenied)
	}
	_, err = readStream(context.Background(), client, guess, 0)
	wantCode(t, err, codes.ResourceExhausted)
	_, err = readStream(context.Background(), client, req, 0)
	wantCode(t, err, codes.ResourceExhausted)
	recs, _ := gwStore.CertificatesOfSet(context.Background(), e.resp.GetCredentialSetId())
	for _, r := range recs {
		if !r.Revoked() {
			t.Fatalf("certificate %s of a locked package is not revoked", r.Serial)
		}
	}
}

// TestRevokedEnrollmentCannotBeRedeemed: the person revokes a pending
// enrollment (the QR code leaked); redeeming it afterwards fails and issues
// nothing.
func TestRevokedEnrollmentCannotBeRedeemed(t *testing.T) {
	ctx := context.Background()
	conn := portalConn(t)
	c := newCard(t, hsmsim.CardSpec{Email: "leak@example.com"})
	sess, err := login(t, conn, c)
	if err != nil {
		t.Fatal(err)
	}
	ec := credgwv1.NewEnrollmentClient(conn)
	en, err := ec.CreateEnrollment(ctx, &credgwv1.CreateEnrollmentRequest{SessionToken: sess.GetSessionToken(), IdentityName: "Leaked"})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := code.ParsePayload(en.GetQrPayload())
	rememberSecret(p.Secret)
	if _, err := ec.RevokeCredential(ctx, &credgwv1.RevokeCredentialRequest{SessionToken: sess.GetSessionToken(), CredentialSetId: en.GetCredentialSetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = readStream(ctx, credgwv1.NewRedemptionClient(dial(t)), redeemRequest(t, enrolled{resp: en, payload: p}, en.GetPassword()), 0)
	wantCode(t, err, codes.FailedPrecondition)
	if n := setSerials(t, en.GetCredentialSetId()); n != 0 {
		t.Fatalf("%d certificates issued for a revoked enrollment", n)
	}
}

// TestDeviceInfoBounded: what a device says about itself is stored and
// shown to administrators, so each field is bounded and printable; a
// refused Redeem changes nothing and the same code redeems with a sane
// description (issue 14, point 9).
func TestDeviceInfoBounded(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	for name, dev := range map[string]*credgwv1.DeviceInfo{
		"a 100 KB model":           {Model: strings.Repeat("x", 100<<10)},
		"a 257-byte os":            {Os: strings.Repeat("y", 257)},
		"a control character":      {AgentVersion: "1.0\x1b[2J"},
		"a newline in a device id": {DeviceId: "abc\ndef"},
	} {
		_, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: t.TempDir(),
			KeystorePIN: "correct horse", Device: dev, MaxResumes: 1})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: got %v, want InvalidArgument", name, err)
		}
	}
	if _, err := agent.Redeem(ctx, agent.Options{Payload: e.payload, Password: e.resp.GetPassword(), OutDir: t.TempDir(),
		KeystorePIN: "correct horse", Device: &credgwv1.DeviceInfo{Model: "Pixel 9 Pro", Os: "Android", OsVersion: "16", AgentVersion: "credgw 1.0",
			DeviceId: strings.Repeat("d", 256)}}); err != nil {
		t.Fatalf("a sane device description, after the refusals: %v", err)
	}
}

// TestConcurrentWrongPasswordsLockAtFive: 40 wrong passwords and the right
// one sent together over gRPC. Each attempt is counted before its password
// is compared: at most four answer PermissionDenied (the fifth wrong one
// locks), every other answers ResourceExhausted "locked" — never
// FailedPrecondition "redeemed already" — and a refused right password
// leaves no live certificate. Several rounds: the races it guards against
// (a right password giving its attempt back while a guess finds none left)
// need the interleaving to happen.
func TestConcurrentWrongPasswordsLockAtFive(t *testing.T) {
	for round := range 4 {
		t.Run(fmt.Sprint("round ", round+1), concurrentWrongPasswordsRound)
	}
}

func concurrentWrongPasswordsRound(t *testing.T) {
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	wrong := "00000000"
	if wrong == e.resp.GetPassword() {
		wrong = "11111111"
	}
	const guesses = 40
	reqs := make([]*credgwv1.RedeemRequest, guesses+1)
	for i := range reqs {
		pw := wrong
		if i == guesses {
			pw = e.resp.GetPassword()
		}
		reqs[i] = redeemRequest(t, e, pw)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[codes.Code]int{}
	var correct error
	for i, req := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := readStream(context.Background(), client, req, 0)
			mu.Lock()
			defer mu.Unlock()
			if i == guesses {
				correct = err
				return
			}
			seen[status.Code(err)]++
		}()
	}
	close(start)
	wg.Wait()
	if seen[codes.PermissionDenied] > 4 || seen[codes.PermissionDenied]+seen[codes.ResourceExhausted] != guesses {
		t.Errorf("wrong passwords answered %v: want at most 4 PermissionDenied, the rest ResourceExhausted", seen)
	}
	if c := status.Code(correct); c != codes.OK && c != codes.ResourceExhausted {
		t.Errorf("the right password: %v, want OK or ResourceExhausted", correct)
	}
	if correct != nil {
		recs, _ := gwStore.CertificatesOfSet(context.Background(), e.resp.GetCredentialSetId())
		for _, r := range recs {
			if !r.Revoked() {
				t.Errorf("certificate %s is live although the right password was refused", r.Serial)
			}
		}
	}
}

// TestLockoutNotifiedOnce: the lock is told to the person and recorded
// once, when it happens; refused Redeems of the locked code afterwards add
// no email and no audit event (issue 14, point 5).
func TestLockoutNotifiedOnce(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	wrong := "00000000"
	if wrong == e.resp.GetPassword() {
		wrong = "11111111"
	}
	for i := 0; i < 15; i++ {
		_, err := readStream(ctx, client, redeemRequest(t, e, wrong), 0)
		if i >= 4 {
			wantCode(t, err, codes.ResourceExhausted)
		}
	}
	setID := e.resp.GetCredentialSetId()
	lockouts := 0
	all, err := gwStore.Notifications(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cs, _ := gwStore.CredentialSet(ctx, setID)
	for _, n := range all {
		if n.Kind == "lockout" && strings.Contains(n.Body, setID) {
			lockouts++
		}
	}
	if lockouts != 1 || cs.ID == "" {
		t.Fatalf("%d lockout notifications for one lock", lockouts)
	}
	evs, err := gwStore.AuditEvents(ctx, 0, 0, cs.PersonID)
	if err != nil {
		t.Fatal(err)
	}
	locked := 0
	for _, ev := range evs {
		if ev.Action == "redeem" && strings.Contains(ev.Detail, setID) && strings.Contains(ev.Detail, "locked") {
			locked++
		}
	}
	if locked != 1 {
		t.Fatalf("%d audit events of the lock, want 1", locked)
	}
}

// TestDatabaseCopyAndQRGiveNothing: with a copy of the database and the
// QR text, the password cannot be tested offline and the stored package
// cannot be opened: the verifier and the package seal are keyed with a
// gateway secret that is not in the database in the clear (issue 14,
// point 3).
func TestDatabaseCopyAndQRGiveNothing(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	a, err := gwStore.ActivationByID(ctx, e.payload.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The attacker knows the right password here: if even that does not
	// match, no guess can.
	if code.CheckPassword(e.payload.Secret, e.resp.GetPassword(), a.Verifier) {
		t.Fatal("the stored verifier is HMAC(secret, password): a database copy plus the QR code tests passwords offline")
	}
	if _, err := readStream(ctx, credgwv1.NewRedemptionClient(dial(t)), redeemRequest(t, e, e.resp.GetPassword()), 0); err != nil {
		t.Fatal(err)
	}
	if a, err = gwStore.ActivationByID(ctx, e.payload.ID); err != nil || len(a.Package) == 0 {
		t.Fatalf("no stored package: %v", err)
	}
	aead, err := code.SealKey(e.payload.Secret, e.resp.GetPassword())
	if err != nil {
		t.Fatal(err)
	}
	n := aead.NonceSize()
	if _, err := aead.Open(nil, a.Package[:n], a.Package[n:], []byte(a.ID)); err == nil {
		t.Fatal("the stored package opens with a key derived from the secret and the password alone")
	}
}

// TestAuditTrailForInvestigators: events say who, from where, what
// happened and why (issue 14, point 8): a refused redemption is "refused"
// with its reason; device and admin events carry the source address; an
// admin revocation by serial names the administrator (certificate subject
// and SHA-256), keeps the comment and names the person whose certificate
// it was.
func TestAuditTrailForInvestigators(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	wrong := "00000000"
	if wrong == e.resp.GetPassword() {
		wrong = "11111111"
	}
	_, err := readStream(ctx, credgwv1.NewRedemptionClient(dial(t)), redeemRequest(t, e, wrong), 0)
	wantCode(t, err, codes.PermissionDenied)
	if _, err := readStream(ctx, credgwv1.NewRedemptionClient(dial(t)), redeemRequest(t, e, e.resp.GetPassword()), 0); err != nil {
		t.Fatal(err)
	}
	setID := e.resp.GetCredentialSetId()
	cs, err := gwStore.CredentialSet(ctx, setID)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := gwStore.CertificatesOfSet(ctx, setID)
	if err != nil || len(recs) == 0 {
		t.Fatalf("%d certificates: %v", len(recs), err)
	}
	adminCert := keyPair(t, dev.AdminCert, dev.AdminKey)
	if _, err := credgwv1.NewAdminClient(dial(t, adminCert)).RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{
		Serial: recs[0].Serial, Reason: credgwv1.RevocationReason_REVOCATION_REASON_KEY_COMPROMISE, Comment: "ticket 4711: phone stolen"}); err != nil {
		t.Fatal(err)
	}
	evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	var refused, issued, revoked *store.AuditEvent
	for i, ev := range evs {
		switch {
		case ev.Action == "redeem" && strings.Contains(ev.Detail, setID) && strings.Contains(ev.Detail, "wrong password"):
			refused = &evs[i]
		case ev.Action == "redeem" && strings.Contains(ev.Detail, setID) && strings.Contains(ev.Detail, "issued"):
			issued = &evs[i]
		case ev.Action == "revoke" && len(ev.Serials) == 1 && ev.Serials[0] == recs[0].Serial:
			revoked = &evs[i]
		}
	}
	if refused == nil || refused.Outcome != "refused" || refused.Source == "" {
		t.Errorf("the refused redemption: %+v; want outcome refused and the source address", refused)
	}
	if issued == nil || issued.Outcome != "ok" || issued.Source == "" {
		t.Errorf("the redemption: %+v; want the source address", issued)
	}
	leaf, _ := x509.ParseCertificate(adminCert.Certificate[0])
	sum := sha256.Sum256(leaf.Raw)
	if revoked == nil || !strings.Contains(revoked.Actor, leaf.Subject.CommonName) || !strings.Contains(revoked.Actor, hex.EncodeToString(sum[:])) ||
		!strings.Contains(revoked.Detail, "ticket 4711: phone stolen") || revoked.PersonID != cs.PersonID || revoked.Source == "" {
		t.Errorf("the admin revocation: %+v; want the admin's subject and SHA-256, the comment, the person and the source", revoked)
	}
}

// TestRefusedRedemptionsRecordedOnce: a redemption refused because the
// code expired or was redeemed already is recorded, with why, once per
// activation however often the device repeats it (issue 14, point 8).
func TestRefusedRedemptionsRecordedOnce(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() { clockOffset.Store(0) })
	count := func(setID, why string) int {
		evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, ev := range evs {
			if ev.Action == "redeem" && ev.Outcome == "refused" && strings.Contains(ev.Detail, setID) && strings.Contains(ev.Detail, why) {
				n++
			}
		}
		return n
	}
	client := credgwv1.NewRedemptionClient(dial(t))

	expired := enrollCard(t)
	clockOffset.Store(int64(11 * time.Minute))
	for range 3 {
		_, err := readStream(ctx, client, redeemRequest(t, expired, expired.resp.GetPassword()), 0)
		wantCode(t, err, codes.FailedPrecondition)
	}
	clockOffset.Store(0)
	if n := count(expired.resp.GetCredentialSetId(), "expired"); n != 1 {
		t.Errorf("%d events for an expired code refused three times, want 1", n)
	}

	done := enrollCard(t)
	if _, err := agent.Redeem(ctx, agent.Options{Payload: done.payload, Password: done.resp.GetPassword(), OutDir: t.TempDir(),
		KeystorePIN: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := readStream(ctx, client, redeemRequest(t, done, done.resp.GetPassword()), 0)
		wantCode(t, err, codes.FailedPrecondition)
	}
	if n := count(done.resp.GetCredentialSetId(), "redeemed already"); n != 1 {
		t.Errorf("%d events for a redeemed code refused three times, want 1", n)
	}
}

// TestFailedRedemptionRecordedAsError: a redemption the gateway could not
// serve (the card's status unavailable: fail closed) is recorded with the
// outcome "error" and the reason, once however often the device retries,
// and the code still redeems once the status is back.
func TestFailedRedemptionRecordedAsError(t *testing.T) {
	ctx := context.Background()
	t.Cleanup(func() {
		clockOffset.Store(0)
		outage.Lock()
		outage.ocsp, outage.crl = false, false
		outage.Unlock()
	})
	e := enrollCard(t)
	client := credgwv1.NewRedemptionClient(dial(t))
	// The status the enrollment fetched is too old to issue on, and no
	// fresh one can be had.
	clockOffset.Store(int64(piv.DefaultMaxStatusAge + time.Minute))
	outage.Lock()
	outage.ocsp, outage.crl = true, true
	outage.Unlock()
	for range 3 {
		_, err := readStream(ctx, client, redeemRequest(t, e, e.resp.GetPassword()), 0)
		wantCode(t, err, codes.Unavailable)
	}
	evs, err := gwStore.AuditEvents(ctx, 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ev := range evs {
		if ev.Action == "redeem" && strings.Contains(ev.Detail, e.resp.GetCredentialSetId()) {
			if ev.Outcome != "error" || !strings.Contains(ev.Detail, "revocation status unavailable") || ev.Source == "" {
				t.Errorf("event %+v: want outcome error, the reason and the source", ev)
			}
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d events for a redemption failed three times, want 1", n)
	}
	outage.Lock()
	outage.ocsp, outage.crl = false, false
	outage.Unlock()
	if _, err := readStream(ctx, client, redeemRequest(t, e, e.resp.GetPassword()), 0); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

// TestOversizedStoredDeviceListed: a description stored before the fields
// were bounded (900 KB here) is listed cut to the bound, and the listing
// works.
func TestOversizedStoredDeviceListed(t *testing.T) {
	ctx := context.Background()
	e := enrollCard(t)
	setID := e.resp.GetCredentialSetId()
	old, _ := protojson.Marshal(&credgwv1.DeviceInfo{Model: strings.Repeat("m", 900<<10), Os: "And\x1broid"})
	if err := gwStore.SetDevice(ctx, setID, string(old), "{}"); err != nil {
		t.Fatal(err)
	}
	cs, err := gwStore.CredentialSet(ctx, setID)
	if err != nil {
		t.Fatal(err)
	}
	admin := credgwv1.NewAdminClient(dial(t, keyPair(t, dev.AdminCert, dev.AdminKey)))
	list, err := admin.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{
		Identity: &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: cs.CardUUID}}})
	if err != nil {
		t.Fatalf("admin list with an old oversized row: %v", err)
	}
	if len(list.GetCredentialSets()) != 1 {
		t.Fatalf("%d sets listed", len(list.GetCredentialSets()))
	}
	d := list.GetCredentialSets()[0].GetDevice()
	if len(d.GetModel()) != 256 || d.GetOs() != "Android" {
		t.Errorf("listed device: model %d bytes, os %q; want 256 bytes and \"Android\"", len(d.GetModel()), d.GetOs())
	}
}
