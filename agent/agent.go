package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/activation/pfx"
	"github.com/credgw/credgw/pkcs11"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// Options is one redemption.
type Options struct {
	Payload  code.Payload
	Password string
	// OutDir receives the credentials: they are written in a staging
	// directory inside it and moved into it only once all verified and the
	// gateway confirmed them, so a failure leaves it as it was.
	OutDir string
	// KeystorePIN protects the written PKCS#12 files.
	KeystorePIN string
	// TrustAnchors are the root CAs (the agency's) the credentials must
	// chain to, given to the device out of band (its management profile,
	// credgw redeem --trust-anchor). The package's chain supplies only
	// intermediates then: a gateway that is not the agency's (a stolen TLS
	// key, a compromised host) cannot make the device install and confirm
	// certificates of a CA of its own, or escrowed keys it knows. Empty:
	// the root of the package's own chain is taken as the anchor, which
	// proves only that the certificates chain to what the gateway sent.
	TrustAnchors []*x509.Certificate
	Device       *credgwv1.DeviceInfo
	// Events receives progress ("issuing 1/3", bytes).
	Events func(Event)
	// MaxResumes bounds automatic resumption of a cut download.
	MaxResumes int
	// MaxWait bounds how long the agent keeps retrying while nothing was
	// accepted yet: the gateway unreachable (restarting), or the
	// credentials "being issued" (by a call that was cut, or by a gateway
	// process that died: its claim is released within a minute). It backs
	// off (the gateway's RetryInfo, else 1 s doubling to 15 s) until the
	// gateway answers for good — issued, or the code expired or refused.
	// Default DefaultMaxWait; negative: no such retries.
	MaxWait time.Duration
	// Keystore, if set, is a PKCS#11 token (a phone's secure element, a
	// SoftHSM token): the device keys are generated on it (non-extractable)
	// and the certificates stored beside them; the escrowed encryption keys
	// (current and history), which arrive in PKCS#12 files under the
	// transport password, are stored on it too. No PKCS#12 is written.
	Keystore *pkcs11.Token
	// DialOptions are added to the gRPC connection (instrumentation).
	DialOptions []grpc.DialOption
	// Now is the device's clock, for verifying what arrives (default:
	// time.Now).
	Now func() time.Time
	// CutAfterBytes drops the first download's connection after that many
	// bytes (tests and demonstrations of the automatic resume); 0: never.
	CutAfterBytes int64
	// Install, if set, installs the downloaded package in place of the
	// default (verify the chains and profiles, write the files under
	// OutDir or store on Keystore); see Package (files go in Package.Dir). Redeem confirms when it
	// returns nil: the gateway then counts the credentials as delivered,
	// so it must have installed them (or, in a load generator, be sure
	// nothing is left to install).
	Install func(ctx context.Context, p *Package) error
	// Attest, if set, attests each device key the agent makes: the
	// device's keystore states that the key was made and is held there
	// (Android Key Attestation), for the challenge the gateway expects
	// (code.AttestationChallenge, given here). A gateway that verifies it
	// issues the derived PIV Authentication certificate as hardware-backed.
	Attest AttestFunc
	// attestContext is the challenge's context: the activation id, or a
	// renewal's (code.RekeyAttestationContext).
	attestContext string
	// renews is the derived PIV Authentication certificate a renewal
	// replaces: the new credentials must be its person's.
	renews *x509.Certificate
}

// AttestFunc attests a device key for challenge.
type AttestFunc func(ctx context.Context, p credgwv1.Profile, pub crypto.PublicKey, challenge []byte) (*credgwv1.KeyAttestation, error)

// Event is what the agent reports while it works.
type Event struct {
	Stage          credgwv1.Stage
	Current, Total int
	Message        string
	// Bytes and TotalBytes during the download.
	Bytes, TotalBytes int64
	Resumed           bool
}

// Result is what was installed.
type Result struct {
	CredentialSetID string
	RedemptionID    string
	SHA256          []byte
	// Serials of the certificates delivered (the manifest's).
	Serials      []string
	Files        []string
	Certificates map[credgwv1.Profile]*x509.Certificate
	KeyHistory   int
	// KeyHistoryFiles are the escrowed keys one PKCS#12 each (base names
	// in OutDir, KeyFileName), the current key first: for readers that
	// take one key of a file. encryption.p12 holds them all. Empty with a
	// Keystore (no PKCS#12 is written) or an Options.Install.
	KeyHistoryFiles []string
	Resumes         int
	// currentEscrow is the CKA_ID of the current escrowed key on a
	// Keystore, labelled current once the set is confirmed.
	currentEscrow []byte
}

// profiles whose keys the device makes; the key-management key comes
// escrowed in a PKCS#12.
var deviceProfiles = []credgwv1.Profile{credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH, credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE}

var fileNames = map[credgwv1.Profile]string{
	credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH:  "auth",
	credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE: "signature",
	credgwv1.Profile_PROFILE_KEY_MANAGEMENT:    "encryption",
}

// Dial connects to the gateway of a payload, trusting it only through the
// pin: the server must present, in its chain, the certificate whose SHA-256
// the QR code carries, and its certificate must chain to that anchor and
// name the gateway host.
func Dial(p code.Payload, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	host, _, err := net.SplitHostPort(p.Gateway)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // replaced by the pinned check
		VerifyConnection:   verifyPinned(p.Pin, host),
	}
	return grpc.NewClient(p.Gateway, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, opts...)...)
}

// pinRefused begins every refusal of verifyPinned: gRPC reports a failed
// handshake as Unavailable, with this text in its message, and the agent
// must tell it from a gateway that is only unreachable.
const pinRefused = "agent: the gateway's TLS certificate is not the one the QR code pins"

// verifyPinned checks a TLS connection against the QR code's pin.
func verifyPinned(pin []byte, host string) func(tls.ConnectionState) error {
	check := checkPinned(pin, host)
	return func(cs tls.ConnectionState) error {
		if err := check(cs); err != nil {
			return fmt.Errorf("%s: %w", pinRefused, err)
		}
		return nil
	}
}

func checkPinned(pin []byte, host string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("agent: the gateway sent no certificate")
		}
		var anchor *x509.Certificate
		for _, c := range cs.PeerCertificates {
			if sum := sha256.Sum256(c.Raw); bytes.Equal(sum[:], pin) {
				anchor = c
			}
		}
		if anchor == nil {
			return errors.New("agent: the gateway does not present the trust anchor pinned in the QR code: do not trust it")
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(anchor)
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: host}); err != nil {
			return fmt.Errorf("agent: the gateway certificate does not chain to the pinned anchor: %w", err)
		}
		return nil
	}
}

// Redeem runs the whole device side. Its errors read without gRPC's
// "rpc error: code = … desc =" (Readable).
func Redeem(ctx context.Context, o Options) (*Result, error) {
	res, err := redeem(ctx, o)
	return res, Readable(err)
}

func redeem(ctx context.Context, o Options) (*Result, error) {
	if err := CheckKeystorePIN(o.KeystorePIN); err != nil {
		return nil, err
	}
	// Sent, a mistyped password spends one of the code's attempts and
	// tells the person of a wrong password.
	if _, err := code.NormalizePassword(o.Password); err != nil {
		return nil, fmt.Errorf("agent: the password is the %d to %d digits shown with the code (spaces and dashes may be typed): nothing was sent, no attempt was used",
			code.MinPasswordDigits, code.MaxPasswordDigits)
	}
	if o.Events == nil {
		o.Events = func(Event) {}
	}
	if o.MaxResumes == 0 {
		o.MaxResumes = 5
	}
	if o.MaxWait == 0 {
		o.MaxWait = DefaultMaxWait
	}
	if err := os.MkdirAll(o.OutDir, 0o700); err != nil {
		return nil, err
	}
	conn, err := Dial(o.Payload, o.DialOptions...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	client := credgwv1.NewRedemptionClient(conn)
	// The anchors go with the request: a gateway whose CA does not chain
	// to them refuses before it issues, and the code stays good.
	var anchors [][]byte
	for _, a := range o.TrustAnchors {
		anchors = append(anchors, a.Raw)
	}
	if len(anchors) > 8 {
		anchors = nil // more than a gateway takes: the device checks alone
	}
	open := func(ctx context.Context, csrs []*credgwv1.CertificateRequest, offset int64, _ string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
		return client.Redeem(ctx, &credgwv1.RedeemRequest{ActivationId: o.Payload.ID, Secret: o.Payload.Secret, Password: o.Password,
			Device: o.Device, Csrs: csrs, ResumeOffset: offset, TrustAnchors: anchors})
	}
	confirm := func(ctx context.Context, rid string, sum []byte) (string, error) {
		cr, err := client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: rid, Secret: o.Payload.Secret, Sha256: sum})
		return cr.GetCredentialSetId(), err
	}
	return installStaged(ctx, o.OutDir, ".redeem-", o, open, confirm)
}

// resumes says "1 resume", "3 resumes".
func resumes(n int) string {
	if n == 1 {
		return "1 resume"
	}
	return fmt.Sprintf("%d resumes", n)
}

// DefaultMaxWait is Options.MaxWait by default: longer than an activation
// code lives by default (10 minutes), so that the code's expiry, not the
// agent, ends a wait.
const DefaultMaxWait = 15 * time.Minute

// backoff is how long to wait before asking again: the gateway's RetryInfo
// taken between 1 s and 15 s (a broken or hostile gateway cannot make its
// agents spin), else 1 s doubling per wait to at most 15 s; plus up to a
// fifth at random, so that agents that waited together (a gateway
// restart) do not all come back in the same instant.
func backoff(st *status.Status, waited int) time.Duration {
	d := min(time.Second<<min(waited, 4), 15*time.Second)
	for _, det := range st.Details() {
		if r, ok := det.(*errdetails.RetryInfo); ok && r.GetRetryDelay().AsDuration() > 0 {
			d = min(max(r.GetRetryDelay().AsDuration(), time.Second), 15*time.Second)
			break
		}
	}
	return d + mathrand.N(d/5+1)
}

// rateLimited tells a gateway's rate limit (ResourceExhausted with a
// RetryInfo: refused before anything was done) from a locked code
// (ResourceExhausted without one: final).
func rateLimited(st *status.Status) bool {
	if st.Code() != codes.ResourceExhausted {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// isKeyCertifiedBefore tells the gateway's refusal of a key it certified
// before.
func isKeyCertifiedBefore(st *status.Status) bool {
	for _, d := range st.Details() {
		if e, ok := d.(*errdetails.ErrorInfo); ok && e.GetReason() == code.ReasonKeyCertifiedBefore {
			return true
		}
	}
	return false
}

// opener starts (or resumes) the download stream.
type opener func(ctx context.Context, csrs []*credgwv1.CertificateRequest, offset int64, redemptionID string) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error)

// fetchAndInstall makes the device keys, downloads the package (resuming a
// cut stream), verifies and installs it, and confirms.
func fetchAndInstall(ctx context.Context, o Options, open opener, confirmOnce confirmer) (*Result, error) {
	// A confirmation whose answer was lost (a cut connection, a gateway
	// restarting) is asked again: the gateway answers a repeated one with
	// the same SHA-256 as the first.
	confirm := func(ctx context.Context, rid string, sum []byte) (string, error) {
		start := time.Now()
		for waited := 0; ; waited++ {
			setID, err := confirmOnce(ctx, rid, sum)
			st, ok := status.FromError(err)
			if err == nil || !ok || st.Code() != codes.Unavailable || o.MaxWait <= 0 {
				return setID, err
			}
			delay := backoff(st, waited)
			if time.Since(start)+delay > o.MaxWait {
				return "", err
			}
			o.Events(Event{Message: fmt.Sprintf("confirming: %s; retrying in %s", st.Message(), delay.Round(100*time.Millisecond))})
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return "", err
			case <-t.C:
			}
		}
	}
	// Device keys made on a keystore token by an attempt that installs
	// nothing (or replaced by new ones) are deleted, with any certificate
	// stored beside them: nothing of a failed install stays on the token.
	var (
		keys     map[credgwv1.Profile]crypto.Signer
		tokenIDs map[credgwv1.Profile][]byte
		csrs     []*credgwv1.CertificateRequest
		unused   [][]byte // replaced by new keys
	)
	installed := false
	defer func() {
		if o.Keystore == nil {
			return
		}
		ids := unused
		if !installed {
			for _, id := range tokenIDs {
				ids = append(ids, id)
			}
		}
		for _, id := range ids {
			for _, c := range []pkcs11.Class{pkcs11.ClassCertificate, pkcs11.ClassPublicKey, pkcs11.ClassPrivateKey} {
				if _, err := o.Keystore.DeleteObjects(context.WithoutCancel(ctx), pkcs11.Query{Class: c, ID: id}); err != nil {
					o.Events(Event{Message: fmt.Sprintf("could not delete an unused device key's %v (CKA_ID %x) from the keystore: %v", c, id, err)})
				}
			}
		}
	}()
	keys, tokenIDs, csrs, err := makeKeys(ctx, o)
	if err != nil {
		return nil, err
	}

	res := &Result{Certificates: map[credgwv1.Profile]*x509.Certificate{}}
	waited, waitStart, renewedKeys := 0, time.Time{}, false
	var pkg []byte
	var total int64
	var sum []byte
	for attempt := 0; ; attempt++ {
		stream := func(ctx context.Context) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error) {
			return open(ctx, csrs, int64(len(pkg)), res.RedemptionID)
		}
		err := download(ctx, stream, &o, &pkg, &total, &sum, res, attempt == 0)
		if err == nil {
			break
		}
		if pe := (protocolError{}); errors.As(err, &pe) {
			return nil, fmt.Errorf("%w (the gateway broke the download protocol: not retried)", err)
		}
		st, ok := status.FromError(err)
		if ok && st.Code() == codes.Unavailable && strings.Contains(st.Message(), pinRefused) {
			// Not a gateway that is restarting: another server, or a
			// QR code for another gateway. Nothing was sent to it.
			return nil, fmt.Errorf("%s (%s): do not trust it; nothing was sent to it. Scan the QR code again, or ask your help desk: %w",
				pinRefused, o.Payload.Gateway, err)
		}
		if ok && st.Code() == codes.InvalidArgument && res.RedemptionID == "" && !renewedKeys && isKeyCertifiedBefore(st) {
			// A gateway process that died (or an issuance that failed)
			// certified these keys before it gave the activation back:
			// make new ones and ask again, once.
			for _, id := range tokenIDs {
				unused = append(unused, id)
			}
			if keys, tokenIDs, csrs, err = makeKeys(ctx, o); err != nil {
				return nil, err
			}
			renewedKeys = true
			attempt--
			o.Events(Event{Message: "the gateway certified these keys in an attempt that failed; asking again with new keys"})
			continue
		}
		// A cut connection is resumed; anything the gateway refused is not,
		// but for its rate limit, which refused before doing anything.
		if ok && st.Code() != codes.Unavailable && st.Code() != codes.Canceled && st.Code() != codes.DeadlineExceeded && st.Code() != codes.Internal && !rateLimited(st) {
			return nil, err
		}
		if ok && rateLimited(st) && o.MaxWait <= 0 {
			return nil, err // no waiting asked for: not a cut connection to resume at once
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("agent: download failed after %s: %w", resumes(attempt), err)
		}
		if ok && o.MaxWait > 0 && (rateLimited(st) || st.Code() == codes.Unavailable && (res.RedemptionID == "" || attempt >= o.MaxResumes)) {
			// The gateway is unreachable (restarting) or busy issuing
			// (nothing accepted yet), or quick resumes did not reach it,
			// or it limits this address for now: wait and ask again,
			// until it answers for good. The keys stay: a package stored
			// for them before a crash is resumed.
			if waited == 0 {
				waitStart = time.Now()
			}
			delay := backoff(st, waited)
			if time.Since(waitStart)+delay > o.MaxWait {
				return nil, fmt.Errorf("agent: the gateway did not answer for good within %s (max wait): %w", o.MaxWait, err)
			}
			o.Events(Event{Message: fmt.Sprintf("%s; retrying in %s", st.Message(), delay.Round(100*time.Millisecond))})
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, fmt.Errorf("agent: stopped waiting (%v): %w", ctx.Err(), err)
			case <-t.C:
			}
			waited++
			attempt--
		} else if attempt >= o.MaxResumes {
			return nil, fmt.Errorf("agent: download failed after %s: %w", resumes(attempt), err)
		}
		res.Resumes++
		o.Events(Event{Message: fmt.Sprintf("connection lost at %d of %d bytes; resuming", len(pkg), total), Resumed: true})
	}
	if got := sha256.Sum256(pkg); !bytes.Equal(got[:], sum) {
		return nil, errors.New("agent: the package does not match its SHA-256: nothing installed")
	}
	res.SHA256 = sum
	install := install
	if o.Install != nil {
		install = customInstall
	}
	if err := install(ctx, pkg, keys, tokenIDs, o, res); err != nil {
		if o.Install != nil {
			return nil, err // the caller's installer says what it needs
		}
		if o.renews != nil {
			// A renewal's old credentials stay in force until it is
			// confirmed: run it again once fixed.
			return nil, fmt.Errorf("%w; nothing was installed or confirmed: the credentials in use stay as they are. "+
				"The gateway holds this renewal open until its confirmation window closes (enrollment.confirm_window, an hour by default) and then revokes it: "+
				"fix what is said above, then renew again after that", err)
		}
		// Refused here, after the gateway issued: this run's device keys
		// go with it, and a resume must come from them.
		return nil, fmt.Errorf("%w; nothing was installed or confirmed: the gateway revokes these credentials when its confirmation window closes, "+
			"and this device's keys for them are gone, so this code cannot be used again: fix what is said above, then enroll again with the card", err)
	}
	setID, err := confirm(ctx, res.RedemptionID, sum)
	if err != nil {
		if !refused(err) {
			// The gateway may have confirmed and the answer got lost:
			// the keys stay (on the token, which cannot make them again,
			// or in the staging directory, installStaged).
			installed = true
			where := "the files stay in the staging directory"
			if o.Keystore != nil {
				where = "the keys stay on the keystore, the new escrowed key labelled history"
			}
			return nil, &ConfirmUnknownError{Err: fmt.Errorf("agent: verified, but whether the gateway took the confirmation is unknown; "+
				"%s (if the gateway did not take it, it revokes the credentials): %w", where, err)}
		}
		return nil, fmt.Errorf("agent: verified, but the confirmation failed: the gateway revokes unconfirmed credentials, so none were moved into the output directory: %w", err)
	}
	res.CredentialSetID = setID
	installed = true
	if o.Keystore != nil && res.currentEscrow != nil {
		if err := labelCurrent(ctx, o.Keystore, res.currentEscrow); err != nil {
			// Installed and confirmed: the key is there, labelled history.
			o.Events(Event{Message: fmt.Sprintf("installed, but the new escrowed key (CKA_ID %x) could not be labelled %q on the keystore: %v", res.currentEscrow, labelCurrentKey, err)})
		}
	}
	return res, nil
}

// ConfirmUnknownError is an install whose confirmation got no answer: the
// gateway may have taken it, so what was installed is kept.
type ConfirmUnknownError struct{ Err error }

func (e *ConfirmUnknownError) Error() string { return e.Err.Error() }
func (e *ConfirmUnknownError) Unwrap() error { return e.Err }

// refused reports whether the gateway answered a call with a refusal (the
// call certainly did nothing), rather than failing to answer: a lost
// connection, a deadline, a gateway unavailable, an internal error.
func refused(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	switch st.Code() {
	case codes.InvalidArgument, codes.NotFound, codes.AlreadyExists, codes.PermissionDenied, codes.FailedPrecondition,
		codes.Unauthenticated, codes.ResourceExhausted, codes.OutOfRange, codes.Unimplemented:
		return true
	}
	return false
}

// makeKeys makes the device keys (software, or on the keystore token) and
// their CSRs.
func makeKeys(ctx context.Context, o Options) (map[credgwv1.Profile]crypto.Signer, map[credgwv1.Profile][]byte, []*credgwv1.CertificateRequest, error) {
	keys := map[credgwv1.Profile]crypto.Signer{}
	tokenIDs := map[credgwv1.Profile][]byte{}
	var csrs []*credgwv1.CertificateRequest
	for _, p := range deviceProfiles {
		var k crypto.Signer
		var err error
		if o.Keystore != nil {
			id := make([]byte, 8)
			if _, err := rand.Read(id); err != nil {
				return nil, tokenIDs, nil, err
			}
			k, err = o.Keystore.GenerateKeyPair(ctx, pkcs11.KeySpec{Type: pkcs11.ECP256, ID: id,
				Label: "credgw " + fileNames[p] + " key", Usage: pkcs11.UsageSign})
			tokenIDs[p] = id
		} else {
			k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		}
		if err != nil {
			return nil, tokenIDs, nil, err
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
		if err != nil {
			return nil, tokenIDs, nil, err
		}
		keys[p] = k
		req := &credgwv1.CertificateRequest{Profile: p, CsrDer: der}
		if o.Attest != nil {
			ctxt := o.attestContext
			if ctxt == "" {
				ctxt = o.Payload.ID
			}
			if req.Attestation, err = o.Attest(ctx, p, k.Public(), code.AttestationChallenge(o.Payload.Secret, ctxt)); err != nil {
				return nil, tokenIDs, nil, fmt.Errorf("agent: attesting the %s key: %w", fileNames[p], err)
			}
		}
		csrs = append(csrs, req)
	}

	return keys, tokenIDs, csrs, nil
}

// protocolError is a gateway's answer that breaks the download protocol:
// final, not a cut connection to resume (a resume would send the secret,
// the password and the CSRs again, for the same answer).
type protocolError struct{ error }

func (e protocolError) Unwrap() error { return e.error }

// download runs one Redeem stream, appending to pkg from the resume offset.
func download(ctx context.Context, open func(context.Context) (grpc.ServerStreamingClient[credgwv1.RedeemResponse], error), o *Options,
	pkg *[]byte, total *int64, sum *[]byte, res *Result, first bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := open(ctx)
	if err != nil {
		return err
	}
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			if *sum == nil {
				return status.Error(codes.Unavailable, "agent: the stream ended before Done")
			}
			return nil
		}
		if err != nil {
			return err
		}
		switch ev := m.GetEvent().(type) {
		case *credgwv1.RedeemResponse_Progress:
			o.Events(Event{Stage: ev.Progress.GetStage(), Current: int(ev.Progress.GetCurrent()), Total: int(ev.Progress.GetTotal()), Message: ev.Progress.GetMessage()})
		case *credgwv1.RedeemResponse_Accepted:
			a := ev.Accepted
			if a.GetTotalBytes() <= 0 || a.GetTotalBytes() > maxPackageBytes {
				return protocolError{fmt.Errorf("agent: the gateway announces a package of %d bytes; a credential package is at most %d", a.GetTotalBytes(), maxPackageBytes)}
			}
			if res.RedemptionID != "" && (a.GetRedemptionId() != res.RedemptionID || a.GetTotalBytes() != *total) {
				return protocolError{errors.New("agent: the resumed package is not the one being downloaded")}
			}
			res.RedemptionID, *total = a.GetRedemptionId(), a.GetTotalBytes()
		case *credgwv1.RedeemResponse_Chunk:
			c := ev.Chunk
			if c.GetOffset() != int64(len(*pkg)) || len(c.GetData()) > 32<<10 || int64(len(*pkg)+len(c.GetData())) > *total {
				return protocolError{errors.New("agent: a chunk does not continue the package")}
			}
			*pkg = append(*pkg, c.GetData()...)
			o.Events(Event{Stage: credgwv1.Stage_STAGE_SENDING, Bytes: int64(len(*pkg)), TotalBytes: *total})
			if first && o.CutAfterBytes > 0 && int64(len(*pkg)) >= o.CutAfterBytes {
				cancel() // the connection drops part way
				*pkg = (*pkg)[:o.CutAfterBytes]
				return status.Error(codes.Unavailable, "agent: connection cut")
			}
		case *credgwv1.RedeemResponse_Done:
			if int64(len(*pkg)) != *total {
				return protocolError{errors.New("agent: Done before the whole package arrived")}
			}
			*sum = ev.Done.GetSha256()
		}
	}
}

// install verifies the package and writes the credentials.
// Labels of escrowed keys and their certificates on a keystore token.
const (
	labelCurrentKey  = "credgw encryption key (current)"
	labelHistoryKey  = "credgw encryption key (history)"
	labelCurrentCert = "credgw encryption certificate (current)"
	labelHistoryCert = "credgw encryption certificate (history)"
)

// storeEscrowed puts an escrowed key and its certificate on the keystore
// token under a CKA_ID derived from the public key, so that a repeated
// install, a renewal or a second enrollment never stores a key twice, and
// returns that CKA_ID. The key is labelled history: the current key
// becomes current only once the gateway has confirmed its set
// (labelCurrent), since a set it refuses is revoked.
func storeEscrowed(ctx context.Context, tok *pkcs11.Token, key crypto.PrivateKey, cert *x509.Certificate) ([]byte, error) {
	signer, ok := key.(crypto.Signer)
	if !ok || !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
		return nil, errors.New("the key in the PKCS#12 is not the certificate's")
	}
	spki, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki)
	id := sum[:16]
	had, err := tok.FindObjects(ctx, pkcs11.Query{Class: pkcs11.ClassPrivateKey, ID: id})
	if err != nil {
		return nil, err
	}
	if len(had) == 0 {
		if _, err := tok.ImportKeyPair(ctx, id, labelHistoryKey, key); err != nil {
			return nil, err
		}
	}
	// ImportCertificate replaces the certificate of that CKA_ID: it keeps
	// its label, so that the key labelled current now (delivered again as
	// history) keeps its current certificate until Confirm.
	certLabel := labelHistoryCert
	if was, err := tok.FindObjects(ctx, pkcs11.Query{Class: pkcs11.ClassCertificate, ID: id}); err != nil {
		return nil, err
	} else if len(was) > 0 {
		certLabel = was[0].Label
	}
	if err := tok.ImportCertificate(ctx, id, certLabel, cert); err != nil {
		if len(had) == 0 { // no key without its certificate
			for _, c := range []pkcs11.Class{pkcs11.ClassPrivateKey, pkcs11.ClassPublicKey} {
				tok.DeleteObjects(context.WithoutCancel(ctx), pkcs11.Query{Class: c, ID: id})
			}
		}
		return nil, err
	}
	return id, nil
}

// labelCurrent makes the escrowed key id (on the token, storeEscrowed) the
// one labelled current, and the one before it history. The new key takes
// the label only after the old one lost it, so a failure part way leaves
// no key labelled current rather than two; the next install labels one.
func labelCurrent(ctx context.Context, tok *pkcs11.Token, id []byte) error {
	for _, r := range []struct {
		class    pkcs11.Class
		id       []byte
		from, to string
	}{
		{pkcs11.ClassPrivateKey, nil, labelCurrentKey, labelHistoryKey},
		{pkcs11.ClassPublicKey, nil, labelCurrentKey, labelHistoryKey},
		{pkcs11.ClassCertificate, nil, labelCurrentCert, labelHistoryCert},
		{pkcs11.ClassPrivateKey, id, "", labelCurrentKey},
		{pkcs11.ClassPublicKey, id, "", labelCurrentKey},
		{pkcs11.ClassCertificate, id, "", labelCurrentCert},
	} {
		if _, err := tok.SetLabel(ctx, pkcs11.Query{Class: r.class, ID: r.id, Label: r.from}, r.to); err != nil {
			return err
		}
	}
	return nil
}

// maxPreviousCAs bounds the earlier issuing CA certificates a package may
// send beside encryption.p12 (one per re-key of the issuing CA).
const maxPreviousCAs = 8

// previousCAs is the pool earlier escrowed keys are verified with: the
// package's intermediates and the issuing CA's certificates from before a re-key
// (ders), which must be CA certificates. Verification still ends at the
// same roots.
func previousCAs(ders [][]byte, inter *x509.CertPool) (*x509.CertPool, error) {
	if len(ders) == 0 {
		return inter, nil
	}
	if len(ders) > maxPreviousCAs {
		return nil, fmt.Errorf("agent: encryption.p12 comes with %d earlier CA certificates, at most %d", len(ders), maxPreviousCAs)
	}
	// Every intermediate the package sent (cross-certificates too), and
	// the earlier CAs.
	pool := inter.Clone()
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("agent: an earlier CA certificate of encryption.p12: %w", err)
		}
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, fmt.Errorf("agent: the earlier CA certificate %q of encryption.p12 is not a CA certificate", c.Subject)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

func install(ctx context.Context, raw []byte, keys map[credgwv1.Profile]crypto.Signer, tokenIDs map[credgwv1.Profile][]byte, o Options, res *Result) error {
	pkg, err := code.ParsePackage(raw)
	if err != nil {
		return err
	}
	var chain []*x509.Certificate
	if c := pkg.Named("chain.der"); c != nil {
		for _, der := range c.GetChain() {
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				return fmt.Errorf("agent: chain: %w", err)
			}
			chain = append(chain, cert)
		}
	}
	if len(chain) == 0 {
		return errors.New("agent: the package has no CA chain")
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	if len(o.TrustAnchors) > 0 {
		for _, a := range o.TrustAnchors {
			roots.AddCert(a)
		}
		for _, c := range chain {
			inter.AddCert(c)
		}
	} else {
		roots.AddCert(chain[len(chain)-1])
		for _, c := range chain[:len(chain)-1] {
			inter.AddCert(c)
		}
	}
	verifyAt := func(c *x509.Certificate, at time.Time, inter *x509.CertPool) error {
		_, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err
	}
	now := time.Now()
	if o.Now != nil {
		now = o.Now()
	}
	verify := func(c *x509.Certificate) error { return verifyAt(c, now, inter) }
	if len(o.TrustAnchors) > 0 {
		// What is kept beside the credentials (chain.pem, the chain in
		// each PKCS#12) is the path verified to the anchor, not the chain
		// the gateway sent: a renewal anchors at its end, so a root of
		// the gateway's own appended to the chain must not become it.
		verified, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return fmt.Errorf("agent: the package's issuing CA %q does not chain to the trust anchor: %w", chain[0].Subject, err)
		}
		chain = verified[0]
	}
	p12pw, err := code.PKCS12Password(o.Payload.Secret, mustNormalize(o.Password))
	if err != nil {
		return err
	}
	// What goes on a keystore token waits until every item verified, so
	// that a package refused half way leaves the token as it was.
	var onToken []func() error
	write := func(name string, data []byte, mode os.FileMode) error {
		// Names come from the package: only plain names of ours are
		// written, never a path the gateway chose.
		if !safeName.MatchString(name) {
			return fmt.Errorf("agent: refusing to write %q: not a credential file name", name)
		}
		p := filepath.Join(o.OutDir, name)
		if err := os.WriteFile(p, data, mode); err != nil {
			return err
		}
		res.Files = append(res.Files, p)
		return nil
	}
	// Every PKCS#12 under the keystore PIN is written with one Writer: two
	// key derivations at the PIN counts (pfx.PINIterations) for all the
	// files, made only when a file is to be written.
	var pinWriter *pfx.Writer
	// underPIN encodes entries under the keystore PIN with the CA
	// certificates ch (the chain in use, or an earlier key's).
	underPIN := func(entries []pfx.Entry, ch []*x509.Certificate) ([]byte, error) {
		if pinWriter == nil {
			w, err := pfx.NewWriter(o.KeystorePIN, pfx.PINIterations, pfx.PINMACIterations)
			if err != nil {
				return nil, errors.New("agent: the keystore PIN cannot protect a PKCS#12 (a character beyond U+FFFF?)")
			}
			pinWriter = w
		}
		return pinWriter.Encode(entries, ch)
	}
	person := samePerson{first: o.renews}
	for _, m := range pkg.GetManifest().GetItems() {
		it, err := pkg.Item(m)
		if err != nil {
			return err
		}
		if m.GetKind() == credgwv1.ItemKind_ITEM_KIND_CHAIN {
			continue
		}
		switch m.GetKind() {
		case credgwv1.ItemKind_ITEM_KIND_CERTIFICATE:
			cert, err := x509.ParseCertificate(it.GetData())
			if err != nil {
				return fmt.Errorf("agent: %s: %w", m.GetName(), err)
			}
			key := keys[m.GetProfile()]
			if key == nil || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(cert.PublicKey) {
				return fmt.Errorf("agent: %s does not certify the key this device made for %v", m.GetName(), m.GetProfile())
			}
			if err := checkIssued(m.GetProfile(), cert); err != nil {
				return err
			}
			if err := person.same(m.GetProfile(), cert); err != nil {
				return err
			}
			if err := verify(cert); err != nil {
				return fmt.Errorf("agent: %s does not chain to the issuing CA: %w", m.GetName(), err)
			}
			base := fileNames[m.GetProfile()]
			if id := tokenIDs[m.GetProfile()]; id != nil {
				// The key stays on the token: the certificate joins it,
				// once everything verified.
				onToken = append(onToken, func() error {
					return o.Keystore.ImportCertificate(ctx, id, "credgw "+base+" certificate", cert)
				})
			} else {
				p12, err := underPIN([]pfx.Entry{{Key: key, Certificate: cert, FriendlyName: DeviceKeyName(m.GetProfile(), cert)}}, chain)
				if err != nil {
					return err
				}
				if err := write(base+".p12", p12, 0o600); err != nil {
					return err
				}
			}
			if err := write(base+".crt", pemCert(cert), 0o644); err != nil {
				return err
			}
			res.Certificates[m.GetProfile()] = cert
		case credgwv1.ItemKind_ITEM_KIND_PKCS12:
			// encryption.p12: the escrowed key and its history, current
			// first (the manifest names the current certificate).
			name := m.GetName()
			if name != "encryption.p12" || res.Certificates[credgwv1.Profile_PROFILE_KEY_MANAGEMENT] != nil {
				return fmt.Errorf("agent: unexpected PKCS#12 %q in the package (one encryption.p12 is expected)", name)
			}
			entries, _, err := pfx.Decode(it.GetData(), p12pw)
			if err != nil {
				return fmt.Errorf("agent: %s does not open: %w", name, err)
			}
			if len(entries) > maxEscrowedKeys {
				return fmt.Errorf("agent: %s holds %d keys; a person's escrowed keys are at most %d (the current one and 20 earlier ones, as a PIV card's retired key slots)",
					name, len(entries), maxEscrowedKeys)
			}
			if len(entries) > 0 {
				if err := person.same(credgwv1.Profile_PROFILE_KEY_MANAGEMENT, entries[0].Certificate); err != nil {
					return err
				}
			}
			if len(entries) == 0 || entries[0].Certificate.SerialNumber.Text(16) != m.GetSerial() || int(m.GetKeyCount()) != len(entries) {
				holds := "no key"
				if len(entries) > 0 {
					holds = fmt.Sprintf("current certificate %s, %d keys", entries[0].Certificate.SerialNumber.Text(16), len(entries))
				}
				return fmt.Errorf("agent: %s does not hold what the manifest says (the manifest: current certificate %s, %d keys; the file: %s)",
					name, m.GetSerial(), m.GetKeyCount(), holds)
			}
			// Beside the file, the issuing CA's certificates from before
			// a re-key: earlier keys may chain through them (to the same
			// anchor), the current key never does.
			earlierInter, err := previousCAs(it.GetChain(), inter)
			if err != nil {
				return err
			}
			var earlier []*x509.Certificate // checked by previousCAs
			for _, der := range it.GetChain() {
				if c, err := x509.ParseCertificate(der); err == nil {
					earlier = append(earlier, c)
				}
			}
			for i, e := range entries {
				// The current certificate must be valid now. An earlier
				// key's may have expired (old mail still needs the key):
				// its chain is checked as of when it was issued.
				var err error
				if i == 0 {
					err = verify(e.Certificate)
				} else if err = verifyAt(e.Certificate, e.Certificate.NotBefore, earlierInter); err != nil &&
					issuedByKeyOf(entries[0].Certificate, chain[0]) && issuedByKeyOf(e.Certificate, chain[0]) {
					// Issued before the issuing CA's certificate in use
					// now (renewed for the same key, key-ceremony.md):
					// the CA that issued the current key (verified above)
					// signed this one too, under its name.
					err = nil
				}
				if err != nil {
					return fmt.Errorf("agent: key %d of %s does not chain to the issuing CA: %w", i+1, name, err)
				}
				// The current key's certificate has the profile in full;
				// an earlier one was made under the rules of its day.
				check := checkEarlier
				if i == 0 {
					check = checkIssued
				}
				if err := check(credgwv1.Profile_PROFILE_KEY_MANAGEMENT, e.Certificate); err != nil {
					if i > 0 {
						return fmt.Errorf("agent: key %d of %s (an earlier escrowed key): %w", i+1, name, err)
					}
					return err
				}
				if o.Keystore != nil {
					onToken = append(onToken, func() error {
						id, err := storeEscrowed(ctx, o.Keystore, e.Key, e.Certificate)
						if err != nil {
							return fmt.Errorf("agent: storing escrowed key %d of %s on the keystore: %w", i+1, name, err)
						}
						if i == 0 {
							res.currentEscrow = id
						}
						return nil
					})
				}
				name := code.KeyHistoryName(i, e.Certificate)
				if strings.HasSuffix(e.FriendlyName, code.CompromisedMark) {
					name += code.CompromisedMark // as the gateway marked it
				}
				entries[i].FriendlyName = name
			}
			if o.Keystore == nil {
				// Re-protect under the keystore PIN: the transport password
				// is never kept. The whole history in one file, and each
				// key in a file of its own for readers that take only the
				// first key of a file (Python cryptography, go-pkcs12,
				// Android's certificate installer).
				// Each key with the CA that certified it: an earlier key
				// may be under a CA certificate from before a re-key
				// (sent beside the file, chaining to the same root).
				chainOf := func(c *x509.Certificate) []*x509.Certificate {
					for _, ca := range earlier {
						if bytes.Equal(c.RawIssuer, ca.RawSubject) && c.CheckSignatureFrom(ca) == nil && c.CheckSignatureFrom(chain[0]) != nil {
							return append([]*x509.Certificate{ca}, chain[1:]...)
						}
					}
					return chain
				}
				all := slices.Clone(chain)
				for _, e := range entries {
					if ca := chainOf(e.Certificate)[0]; !slices.ContainsFunc(all, ca.Equal) {
						all = append(all, ca)
					}
				}
				p12, err := underPIN(entries, all)
				if err != nil {
					return err
				}
				if err := write(name, p12, 0o600); err != nil {
					return err
				}
				for i, e := range entries {
					p12, err := underPIN([]pfx.Entry{e}, chainOf(e.Certificate))
					if err != nil {
						return err
					}
					f := KeyFileName(i, e.Certificate)
					if err := write(f, p12, 0o600); err != nil {
						return err
					}
					res.KeyHistoryFiles = append(res.KeyHistoryFiles, f)
				}
			}
			if err := write("encryption.crt", pemCert(entries[0].Certificate), 0o644); err != nil {
				return err
			}
			res.Certificates[credgwv1.Profile_PROFILE_KEY_MANAGEMENT] = entries[0].Certificate
			res.KeyHistory += len(entries)
		}
	}
	for _, p := range append(slices.Clone(deviceProfiles), credgwv1.Profile_PROFILE_KEY_MANAGEMENT) {
		if res.Certificates[p] == nil {
			return fmt.Errorf("agent: the package has no %v certificate", p)
		}
		res.Serials = append(res.Serials, res.Certificates[p].SerialNumber.Text(16))
	}
	var chainPEM []byte
	for _, c := range chain {
		chainPEM = append(chainPEM, pemCert(c)...)
	}
	if err := write("chain.pem", chainPEM, 0o644); err != nil {
		return err
	}
	// Everything verified: only now does the keystore token change.
	for _, w := range onToken {
		if err := w(); err != nil {
			return err
		}
	}
	return nil
}

// KeyFileName is the file of the i-th escrowed key (0 is the current key,
// then the history newest first), so that the names sort in that order:
// encryption-00-current.p12, encryption-01-until-2026-03-14.p12, … (the
// date is when the key's certificate ends, UTC). The history holds at most
// 21 keys (the current one and 20 earlier ones).
func KeyFileName(i int, cert *x509.Certificate) string {
	if i == 0 {
		return "encryption-00-current.p12"
	}
	return fmt.Sprintf("encryption-%02d-until-%s.p12", i, cert.NotAfter.UTC().Format("2006-01-02"))
}

// keyFile matches the names KeyFileName gives.
var keyFile = regexp.MustCompile(`^encryption-[0-9]{2}-(current|until-[0-9]{4}-[0-9]{2}-[0-9]{2})\.p12$`)

// DeviceKeyName is the friendly name of a device key in auth.p12 or
// signature.p12: what a keystore shows the person.
func DeviceKeyName(p credgwv1.Profile, cert *x509.Certificate) string {
	what := map[credgwv1.Profile]string{
		credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH:  "derived PIV authentication key",
		credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE: "signature key",
	}[p]
	if what == "" {
		what = fileNames[p] + " key"
	}
	return what + ", serial " + cert.SerialNumber.Text(16)
}

func mustNormalize(p string) string {
	n, err := code.NormalizePassword(p)
	if err != nil {
		return p
	}
	return n
}

var safeName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}\.(p12|crt|pem)$`)

// checkProfile: the certificate is the kind that was asked for.
// checkProfile: the certificate is of its profile exactly (STANDARDS.md,
// Common Policy §6.1.7): derived PIV Authentication digitalSignature only
// with clientAuth; S/MIME signature digitalSignature and nonRepudiation
// with emailProtection; key management keyAgreement (EC key) or
// keyEncipherment (RSA key) only, never a signing bit, for its key is
// escrowed; and no subscriber certificate is a CA.
func checkProfile(p credgwv1.Profile, c *x509.Certificate) error {
	if c.IsCA {
		return fmt.Errorf("agent: the %v certificate is a CA certificate (basicConstraints CA:TRUE)", p)
	}
	has := func(e x509.ExtKeyUsage) bool { return slices.Contains(c.ExtKeyUsage, e) }
	ok := false
	switch p {
	case credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH:
		ok = has(x509.ExtKeyUsageClientAuth) && c.KeyUsage == x509.KeyUsageDigitalSignature
	case credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE:
		ok = has(x509.ExtKeyUsageEmailProtection) && c.KeyUsage == x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment
	case credgwv1.Profile_PROFILE_KEY_MANAGEMENT:
		want := x509.KeyUsageKeyAgreement // an EC key agrees keys
		if _, isRSA := c.PublicKey.(*rsa.PublicKey); isRSA {
			want = x509.KeyUsageKeyEncipherment // an RSA key is encrypted to
		}
		ok = has(x509.ExtKeyUsageEmailProtection) && c.KeyUsage == want
	}
	if !ok {
		return fmt.Errorf("agent: the %v certificate is not of that profile (key usage %#x, extended key usage %v)", p, c.KeyUsage, c.ExtKeyUsage)
	}
	return nil
}

// checkIssued is checkProfile and profileRest: the profile of a
// certificate the package issues.
func checkIssued(p credgwv1.Profile, c *x509.Certificate) error {
	if err := checkProfile(p, c); err != nil {
		return err
	}
	if why := profileRest(p, c); why != "" {
		return fmt.Errorf("agent: the %v certificate is not of that profile: %s", p, why)
	}
	return nil
}

// Policies of the profiles (STANDARDS.md §3.3): id-fpki-common-derived-
// pivAuth(-hardware) for derived PIV Authentication, id-fpki-common-policy
// for the S/MIME certificates.
var (
	policyDerivedPIVAuth   = mustOID(2, 16, 840, 1, 101, 3, 2, 1, 3, 40)
	policyDerivedPIVAuthHW = mustOID(2, 16, 840, 1, 101, 3, 2, 1, 3, 41)
	policyCommon           = mustOID(2, 16, 840, 1, 101, 3, 2, 1, 3, 6)
)

func mustOID(ints ...uint64) x509.OID {
	o, err := x509.OIDFromInts(ints)
	if err != nil {
		panic(err)
	}
	return o
}

// profileEKUs are the extended key usages each profile must not have, as
// the gateway's profile rules have them (issuance/profile.go): what would
// let the certificate pass for something else.
var profileEKUs = map[credgwv1.Profile]struct {
	forbidden []x509.ExtKeyUsage
	unknown   []asn1.ObjectIdentifier
}{
	credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH: {
		forbidden: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageEmailProtection, x509.ExtKeyUsageCodeSigning,
			x509.ExtKeyUsageAny, x509.ExtKeyUsageTimeStamping, x509.ExtKeyUsageOCSPSigning},
		unknown: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 2, 3, 5}, {1, 3, 6, 1, 4, 1, 311, 10, 3, 12}, {1, 3, 6, 1, 4, 1, 311, 10, 3, 4},
			{2, 16, 840, 1, 101, 3, 6, 8}}, // PKINIT KDC, MS document signing, MS EFS, id-PIV-cardAuth
	},
	credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE: {
		forbidden: []x509.ExtKeyUsage{x509.ExtKeyUsageAny, x509.ExtKeyUsageTimeStamping, x509.ExtKeyUsageOCSPSigning, x509.ExtKeyUsageCodeSigning},
		unknown:   []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 21}, {2, 16, 840, 1, 101, 3, 6, 8}, {1, 3, 6, 1, 4, 1, 311, 10, 3, 4}}, // SSH client, id-PIV-cardAuth, MS EFS
	},
	credgwv1.Profile_PROFILE_KEY_MANAGEMENT: {
		forbidden: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageCodeSigning, x509.ExtKeyUsageAny},
		unknown: []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 21}, {1, 3, 6, 1, 4, 1, 311, 20, 2, 2}, {1, 3, 6, 1, 5, 2, 3, 4},
			{1, 3, 6, 1, 4, 1, 311, 10, 3, 12}}, // SSH client, smart card logon, PKINIT client, MS document signing
	},
}

// profileRest is the rest of the profile the gateway enforces, checked
// again here for the certificates a package issues (not an earlier
// escrowed key's, made under the rules of its day): the profile's
// policies only (a derived credential must not pass for the card,
// …3.13), none of the extended key usages its profile forbids, and
// exactly one card-holder UUID (urn:uuid:). "" if it holds.
func profileRest(p credgwv1.Profile, c *x509.Certificate) string {
	if why := forbiddenEKU(p, c); why != "" {
		return why
	}
	allowed := []x509.OID{policyCommon}
	if p == credgwv1.Profile_PROFILE_DERIVED_PIV_AUTH {
		allowed = []x509.OID{policyDerivedPIVAuth, policyDerivedPIVAuthHW}
	}
	if len(c.Policies) == 0 {
		return "no certificate policy"
	}
	for _, pol := range c.Policies {
		if !slices.ContainsFunc(allowed, pol.Equal) {
			return "it asserts certificate policy " + pol.String() + ", not one of its profile's"
		}
	}
	uuids := 0
	for _, u := range c.URIs {
		if u.Scheme == "urn" && strings.HasPrefix(strings.ToLower(u.Opaque), "uuid:") {
			uuids++
		}
	}
	if uuids != 1 {
		return fmt.Sprintf("%d urn:uuid: names, the profile has exactly one", uuids)
	}
	return ""
}

// forbiddenEKU says which extended key usage of c its profile forbids
// ("" for none): what every credgw release has forbidden, so earlier
// escrowed keys are held to it too.
func forbiddenEKU(p credgwv1.Profile, c *x509.Certificate) string {
	rule := profileEKUs[p]
	for _, e := range rule.forbidden {
		if slices.Contains(c.ExtKeyUsage, e) {
			return fmt.Sprintf("its profile forbids extended key usage %v", e)
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		if slices.ContainsFunc(rule.unknown, o.Equal) {
			return fmt.Sprintf("its profile forbids extended key usage %v", o)
		}
	}
	return ""
}

// checkEarlier is the check of an earlier escrowed key's certificate:
// checkProfile and no forbidden extended key usage (its policies and
// names were made under the rules of its day).
func checkEarlier(p credgwv1.Profile, c *x509.Certificate) error {
	if err := checkProfile(p, c); err != nil {
		return err
	}
	if why := forbiddenEKU(p, c); why != "" {
		return fmt.Errorf("agent: the %v certificate is not of that profile: %s", p, why)
	}
	return nil
}

// issuedByKeyOf reports whether c was signed by ca's key under ca's name:
// an earlier certificate of an issuing CA whose certificate was renewed
// for the same key.
func issuedByKeyOf(c, ca *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, ca.RawSubject) && c.CheckSignatureFrom(ca) == nil
}

// maxEscrowedKeys bounds the escrowed keys of one package: the current one
// and 20 earlier ones (a PIV card's retired key-management slots).
const maxEscrowedKeys = 21

// samePerson checks that the current certificates of a package are one
// person's: one subject (the card's), and the S/MIME certificates one
// email. (Each certificate has a UUID of its own, SP 800-157: nothing to
// compare there.) The earlier escrowed keys are not compared: they may be
// of an earlier name or email.
type samePerson struct {
	first *x509.Certificate
	email *x509.Certificate
}

func (s *samePerson) same(p credgwv1.Profile, c *x509.Certificate) error {
	other := func(what string) error {
		return fmt.Errorf("agent: the %v certificate is another person's (its %s differs from the other certificates'): "+
			"refusing the package", p, what)
	}
	if s.first == nil {
		s.first = c
	} else if !bytes.Equal(c.RawSubject, s.first.RawSubject) {
		return other("subject")
	}
	if p == credgwv1.Profile_PROFILE_DIGITAL_SIGNATURE || p == credgwv1.Profile_PROFILE_KEY_MANAGEMENT {
		if s.email == nil {
			s.email = c
		} else if !slices.Equal(c.EmailAddresses, s.email.EmailAddresses) {
			return other("email")
		}
	}
	return nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// maxPackageBytes bounds the package a device buffers: a set with a long
// key history is tens of kilobytes.
const maxPackageBytes = 16 << 20
