package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/audit"
	"github.com/credgw/credgw/activation/lifecycle"
	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/piv/session"
)

// newServices builds the application services on the parts: the audit
// log and the outbox on the store, PKI-AUTH sessions on the verifier, and,
// when a CA is configured, enrollment and redemption and the lifecycle on
// the CA and the escrow.
func (s *Server) newServices(ctx context.Context, o options) error {
	cfg := s.cfg
	now := func() time.Time { return s.now() }
	s.audit = audit.New(s.store, s.log, now)
	var err error
	if s.outbox, err = notify.New(cfg.Notify, cfg.Path, s.store, s.log, now); err != nil {
		return err
	}
	if s.sessions, err = session.New(session.Config{GatewayID: cfg.GatewayID, ChallengeTTL: cfg.PIV.ChallengeTTL.Duration,
		SessionTTL: cfg.PIV.SessionTTL.Duration, Store: s.store, Verifier: s.verifier, Audit: s.audit, Log: s.log, Now: now}); err != nil {
		return err
	}
	if cfg.CA.CertificateFile == "" {
		return nil
	}
	s.hsm = newHSM(cfg)
	if s.ca, s.escrow, err = loadCA(ctx, cfg, s.hsm, s.store, o, s.metrics); err != nil {
		return err
	}
	// The certificates in the store against the keys configured: a re-key
	// that kept ca.name, or left out ca.retired, is told loudly (their
	// status is answered by the wrong key, or not at all). Not refused: a
	// gateway re-keyed as the earlier docs said would stay down until its
	// old certificates expired.
	problems, err := s.ca.CheckIssuers(ctx)
	if err != nil {
		return err
	}
	for _, p := range problems {
		s.log.Error("certificates whose status no configured key can answer: " + p)
	}
	var retired []string
	for _, r := range cfg.CA.Retired {
		retired = append(retired, r.Name)
	}
	s.log.Info("issuing CA", "name", cfg.CA.Name, "subject", s.ca.Chain()[0].Subject.String(), "retired", strings.Join(retired, ","))
	previous, err := previousCAs("ca.previous_certificate_files", paths(cfg, cfg.CA.PreviousCertificateFiles), s.ca.Chain())
	if err != nil {
		return err
	}
	// A retired key's certificate is a previous one too (its escrowed
	// keys go in key histories with it).
	for _, c := range s.ca.RetiredCertificates() {
		if !slices.ContainsFunc(previous, c.Equal) {
			previous = append(previous, c)
		}
	}
	anchors, err := readCerts([]string{cfg.Path(cfg.Enroll.TLSAnchorFile)})
	if err != nil {
		return fmt.Errorf("enrollment.tls_anchor_file: %w", err)
	}
	pin := sha256.Sum256(anchors[0].Raw)
	pepper, pepperSince, err := s.escrow.GatewaySecret(ctx, "activation-pepper")
	if err != nil {
		return err
	}
	// Only its sealed time counts: when verifiers began to be bound to
	// their credential set (activation.Config.BindingSince).
	_, bindingSince, err := s.escrow.GatewaySecret(ctx, "activation-set-binding")
	if err != nil {
		return err
	}
	policy, err := cfg.AttestPolicy()
	if err != nil {
		return err
	}
	if s.activation, err = activation.New(activation.Config{
		Attest: policy, RefuseUnattested: cfg.Attest.Unattested == "refuse",
		Store: s.store, Issuer: s.ca, Escrow: s.escrow, PreviousCAs: previous, RetiredCAs: s.ca.RetiredCertificates(), Pepper: pepper, PepperSince: pepperSince, BindingSince: bindingSince, Gateway: cfg.Enroll.GatewayAddress, Pin: pin[:],
		PasswordDigits: cfg.Enroll.PasswordDigits, Lifetime: cfg.Enroll.Lifetime.Duration, MaxAttempts: cfg.Enroll.MaxAttempts,
		MaxSets: cfg.Enroll.MaxSets, ConfirmWindow: cfg.Enroll.ConfirmWindow.Duration, RenewalPercent: cfg.Renewal.OpensAtPercent,
		Verifier: s.verifier, Audit: s.audit, Notify: s.outbox, Log: s.log, Now: now, Lockout: s.metrics.lockouts.Inc,
	}); err != nil {
		return err
	}
	if cfg.CA.HardwareBackedDevices {
		s.log.InfoContext(ctx, "ca.hardware_backed_devices: derived PIV Authentication certificates of attested hardware keys assert "+
			"id-fpki-common-derived-pivAuth-hardware (…3.41), which the Common Policy (§3.2.3) allows only after in-person or supervised "+
			"remote registration with a 1:1 biometric match against the card")
	}
	if !s.outbox.Enabled() {
		s.log.WarnContext(ctx, "no notifications configured: enrollments and renewals that deliver an escrowed encryption key are refused "+
			"(Common Policy §4.12.1: every attempt is told to the person); configure notifications.smtp, .webhook or .file")
	}
	s.lifecycle, err = lifecycle.New(lifecycle.Config{Store: s.store, Activation: s.activation, CA: s.ca, Verifier: s.verifier,
		Audit: s.audit, Notify: s.outbox, Log: s.log, Now: now, UnknownStatus: s.metrics.linkageUnknown.Inc,
		Overdue: func(d time.Duration) { s.metrics.linkageOverdue.Set(d.Seconds()) },
		Linkage: lifecycle.Linkage{FirstCheck: cfg.Linkage.FirstCheck.Duration, Interval: cfg.Linkage.Interval.Duration,
			MaxUnknown: cfg.Linkage.MaxUnknown.Duration, OnUnknown: cfg.Linkage.OnUnknown, OnCardExpiry: cfg.Linkage.OnCardExpiry,
			Concurrency: cfg.Linkage.Concurrency}})
	return err
}
