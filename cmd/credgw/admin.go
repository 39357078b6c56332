package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/credgw/credgw/issuance"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// adminFlags are the connection and identity flags of `credgw admin`.
type adminFlags struct {
	gateway, caFile, certFile, keyFile string
	cardUUID, fascn, person            string
	timeout                            time.Duration
	json                               bool
}

func (f *adminFlags) bind(cmd *cobra.Command, identity bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.gateway, "gateway", "127.0.0.1:8443", "gateway gRPC address")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM CA that issued the gateway's TLS certificate (required)")
	fl.StringVar(&f.certFile, "cert", "", "admin client certificate, PEM (required; listed in roles.admin)")
	fl.StringVar(&f.keyFile, "key", "", "admin client key, PEM (required)")
	fl.DurationVar(&f.timeout, "timeout", 30*time.Second, "deadline of the call")
	fl.BoolVar(&f.json, "json", false, "print the gateway's answer as JSON instead of a table")
	cmd.MarkFlagRequired("ca-file")
	cmd.MarkFlagRequired("cert")
	cmd.MarkFlagRequired("key")
	if identity {
		fl.StringVar(&f.cardUUID, "card-uuid", "", "PIV identity: the card UUID")
		fl.StringVar(&f.fascn, "fascn", "", "PIV identity: the card's FASC-N, 25 bytes in hex")
		fl.StringVar(&f.person, "person", "", "PIV identity: the person id (every card of the person)")
	}
}

func (f *adminFlags) selector(required bool) (*credgwv1.PIVIdentitySelector, error) {
	n := 0
	var sel *credgwv1.PIVIdentitySelector
	if f.cardUUID != "" {
		n++
		sel = &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_CardUuid{CardUuid: f.cardUUID}}
	}
	if f.fascn != "" {
		n++
		raw, err := hex.DecodeString(f.fascn)
		if err != nil {
			return nil, errors.New("--fascn: want the 25-byte FASC-N in hex")
		}
		sel = &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_Fascn{Fascn: raw}}
	}
	if f.person != "" {
		n++
		sel = &credgwv1.PIVIdentitySelector{Selector: &credgwv1.PIVIdentitySelector_PersonId{PersonId: f.person}}
	}
	switch {
	case n > 1:
		return nil, errors.New("give one of --card-uuid, --fascn, --person")
	case n == 0 && required:
		return nil, errors.New("give the PIV identity: --card-uuid, --fascn or --person")
	}
	return sel, nil
}

func (f *adminFlags) client(ctx context.Context) (credgwv1.AdminClient, func(), context.Context, error) {
	pem, err := os.ReadFile(f.caFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--ca-file: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, nil, nil, errors.New("--ca-file: no PEM certificate in it")
	}
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--cert/--key: %w", err)
	}
	conn, err := grpc.NewClient(f.gateway, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})))
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	return credgwv1.NewAdminClient(conn), func() { cancel(); conn.Close() }, ctx, nil
}

// printJSON writes a message as one line of JSON.
func printJSON(cmd *cobra.Command, m proto.Message) error {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	var v any
	json.Unmarshal(b, &v)
	out, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintln(cmd.OutOrStdout(), string(out))
	return nil
}

// reason reads --reason: an RFC 5280 name an end-entity certificate may
// carry ("keyCompromise", also "key-compromise" or its number).
func reason(s string) (credgwv1.RevocationReason, error) {
	r, err := issuance.ParseRevocationReason(s)
	if err == nil && !r.EndEntity() {
		return 0, fmt.Errorf("--reason %s is not a reason for a derived credential; one of %s", r, reasonNames())
	}
	if err != nil {
		return 0, fmt.Errorf("--reason %q: one of %s", s, reasonNames())
	}
	return credgwv1.RevocationReason(r), nil
}

// reasonNames lists the reasons --reason takes, by their RFC 5280 names.
func reasonNames() string {
	var out []string
	for _, r := range issuance.EndEntityReasons() {
		out = append(out, r.String())
	}
	return strings.Join(out, ", ")
}

// reasonHelp is the help of --reason.
func reasonHelp() string {
	return "revocation reason, by its RFC 5280 name: " + reasonNames() +
		` (any case; "key-compromise" or the reason's number also work)`
}

// setStates are the values of --state, in the order a set lives them.
var setStates = []string{"pending", "redeeming", "active", "revoked", "abandoned"}

func newAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Administer a running gateway over gRPC (admin role, mTLS)",
		Long: `Administer a running gateway over gRPC with an admin client certificate
(listed in roles.admin): list and search credential sets and activations,
revoke by serial or by PIV identity, terminate a PIV identity, read the audit
log. Self-service revocation of a lost device stays in the portal and the API.`,
	}
	sub := func(use, short string, identity bool, run func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error) (*cobra.Command, *adminFlags) {
		f := &adminFlags{}
		c := &cobra.Command{Use: use, Short: short, Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
			client, done, ctx, err := f.client(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			return rpcErr(run(cmd, f, client, ctx))
		}}
		f.bind(c, identity)
		cmd.AddCommand(c)
		return c, f
	}

	var state string
	list, _ := sub("list [--card-uuid U | --fascn F | --person P] [--state S]", "List credential sets, newest first", true,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			sel, err := f.selector(false)
			if err != nil {
				return err
			}
			st := credgwv1.CredentialSetState_CREDENTIAL_SET_STATE_UNSPECIFIED
			if state != "" {
				v, ok := credgwv1.CredentialSetState_value["CREDENTIAL_SET_STATE_"+strings.ToUpper(state)]
				if !ok {
					return fmt.Errorf("--state %q: one of %s", state, strings.Join(setStates, ", "))
				}
				st = credgwv1.CredentialSetState(v)
			}
			resp, err := c.ListCredentials(ctx, &credgwv1.AdminListCredentialsRequest{Identity: sel, State: st, PageSize: 500})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			return printSets(cmd.OutOrStdout(), resp)
		})
	list.Flags().StringVar(&state, "state", "", "only sets in this state: "+strings.Join(setStates, ", "))

	sub("activations [--card-uuid U | --fascn F | --person P]", "List activations (QR codes), newest first", true,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			sel, err := f.selector(false)
			if err != nil {
				return err
			}
			resp, err := c.ListActivations(ctx, &credgwv1.ListActivationsRequest{Identity: sel, PageSize: 500})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			return printActivations(cmd.OutOrStdout(), resp)
		})

	sub("force-crl", "Sign the CRL now (and each retired CA key's), and print its number and dates", false,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			resp, err := c.ForceCRL(ctx, &credgwv1.ForceCRLRequest{})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "CRL number %d, thisUpdate %s, nextUpdate %s\n", resp.GetCrlNumber(), fmtTS(resp.GetThisUpdate()), fmtTS(resp.GetNextUpdate()))
			return nil
		})

	var serial, why string
	revoke, _ := sub("revoke --serial HEX [--reason R]", "Revoke one certificate by serial (of a set no device confirmed yet: the whole set, its waiting package with it)", false,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			r, err := reason(why)
			if err != nil {
				return err
			}
			sn, err := parseSerial(serial)
			if err != nil {
				return err
			}
			resp, err := c.RevokeCertificate(ctx, &credgwv1.RevokeCertificateRequest{Serial: sn, Reason: r})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			crt := resp.GetCertificate()
			fmt.Fprintf(cmd.OutOrStdout(), "revoked serial=%s (%s), reason %s, at %s\n", fmtSerial(crt.GetSerial()),
				profileName(crt.GetProfile()), issuance.RevocationReason(r), fmtTS(crt.GetRevokedAt()))
			return nil
		})
	revoke.Flags().StringVar(&serial, "serial", "", "certificate serial in hex, as 'openssl x509 -noout -serial' prints it (colons and case do not matter) (required)")
	revoke.Flags().StringVar(&why, "reason", "unspecified", reasonHelp())
	revoke.MarkFlagRequired("serial")

	var idWhy string
	revokeID, _ := sub("revoke-identity (--card-uuid U | --fascn F | --person P) [--reason R]", "Revoke every derived credential of a PIV identity", true,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			sel, err := f.selector(true)
			if err != nil {
				return err
			}
			r, err := reason(idWhy)
			if err != nil {
				return err
			}
			resp, err := c.RevokeIdentity(ctx, &credgwv1.RevokeIdentityRequest{Identity: sel, Reason: r})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			printRevoked(cmd.OutOrStdout(), "revoked", resp.GetRevokedSerials())
			return nil
		})
	revokeID.Flags().StringVar(&idWhy, "reason", "unspecified", reasonHelp())

	var comment string
	term, _ := sub("terminate (--card-uuid U | --fascn F | --person P) [--comment TEXT]", "Terminate a PIV identity: revoke all its derived credentials and refuse it from now on", true,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			sel, err := f.selector(true)
			if err != nil {
				return err
			}
			resp, err := c.TerminateIdentity(ctx, &credgwv1.TerminateIdentityRequest{Identity: sel, Comment: comment})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "terminated %s: refused from now on\n", f.describe())
			printRevoked(cmd.OutOrStdout(), "revoked", resp.GetRevokedSerials())
			return nil
		})
	term.Flags().StringVar(&comment, "comment", "", "why (kept with the termination)")

	var actID, cancelWhy string
	cancel, _ := sub("cancel --activation ID [--comment TEXT]", "Cancel a pending activation (QR code) for good", false,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			resp, err := c.CancelActivation(ctx, &credgwv1.CancelActivationRequest{ActivationId: actID, Comment: cancelWhy})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			a := resp.GetActivation()
			fmt.Fprintf(cmd.OutOrStdout(), "cancelled activation %s; its credential set %s is revoked\n", a.GetId(), a.GetCredentialSetId())
			return nil
		})
	cancel.Flags().StringVar(&actID, "activation", "", "activation id (required)")
	cancel.Flags().StringVar(&cancelWhy, "comment", "", "why (kept in the audit log)")
	cancel.MarkFlagRequired("activation")

	var after int64
	audit, _ := sub("audit [--after SEQ] [--person P]", "Read the audit log, or the audit trail of a person", true,
		func(cmd *cobra.Command, f *adminFlags, c credgwv1.AdminClient, ctx context.Context) error {
			if f.cardUUID != "" || f.fascn != "" {
				return errors.New("audit: select by --person")
			}
			resp, err := c.ReadAuditLog(ctx, &credgwv1.ReadAuditLogRequest{AfterSequence: after, PageSize: 1000, PersonId: f.person})
			if err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd, resp)
			}
			return printAudit(cmd.OutOrStdout(), resp)
		})
	audit.Flags().Int64Var(&after, "after", 0, "only events after this seq")
	return cmd
}
