package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
)

// The human forms of `credgw admin`'s answers (--json prints the answers
// themselves).

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

// describe names the identity the flags select: "person alice".
func (f *adminFlags) describe() string {
	switch {
	case f.cardUUID != "":
		return "card " + f.cardUUID
	case f.fascn != "":
		return "FASC-N " + f.fascn
	case f.person != "":
		return "person " + f.person
	}
	return "everyone"
}

// word is an enum value without its prefix, in lowercase:
// CREDENTIAL_SET_STATE_ACTIVE → "active".
func word(name, prefix string) string {
	w := strings.ToLower(strings.TrimPrefix(name, prefix))
	if w == "unspecified" || w == "" {
		return "-"
	}
	return strings.ReplaceAll(w, "_", "-")
}

func profileName(p credgwv1.Profile) string { return word(p.String(), "PROFILE_") }

// owner is who a credential set belongs to: the person id, else the
// identity's name.
func owner(cs *credgwv1.CredentialSet) string {
	for _, s := range []string{cs.GetPivIdentity().GetPersonId(), cs.GetIdentityName(), cs.GetPivIdentity().GetCardUuid()} {
		if s != "" {
			return cell(s)
		}
	}
	return "-"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

// cell is a gateway's string made one table cell: no control characters
// (an admin's comment, a device name a person typed, could otherwise
// rewrite the reader's terminal: terminalSafe), no tab or line break.
func cell(s string) string {
	return strings.NewReplacer("\t", " ", "\n", " ").Replace(terminalSafe(s))
}

// printSets prints credential sets one certificate a line; a set with no
// certificate yet (pending) has one line of its own.
func printSets(w io.Writer, resp *credgwv1.AdminListCredentialsResponse) error {
	sets := resp.GetCredentialSets()
	if len(sets) == 0 {
		fmt.Fprintln(w, "no credential sets")
		return nil
	}
	tw := table(w)
	fmt.Fprintln(tw, "OWNER\tSET\tSET STATE\tCREATED\tPROFILE\tSERIAL\tCERT STATUS\tNOT AFTER\tKEY ATTESTATION")
	certs := 0
	for _, cs := range sets {
		head := fmt.Sprintf("%s\t%s\t%s\t%s", owner(cs), cell(cs.GetId()), word(cs.GetState().String(), "CREDENTIAL_SET_STATE_"), fmtTS(cs.GetCreatedAt()))
		attested := map[credgwv1.Profile]string{}
		for _, v := range cs.GetAttestations() {
			lock := "unlocked"
			if v.GetDeviceLocked() {
				lock = "locked"
			}
			attested[v.GetProfile()] = fmt.Sprintf("%s, boot %s, %s", v.GetSecurityLevel(), v.GetVerifiedBootState(), lock)
		}
		if len(cs.GetCertificates()) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\n", head)
		}
		for _, c := range cs.GetCertificates() {
			certs++
			st := word(c.GetStatus().String(), "CERTIFICATE_STATUS_")
			if c.GetRevokedAt() != nil {
				st = "revoked " + fmtTS(c.GetRevokedAt())
			}
			att := attested[c.GetProfile()]
			if att == "" {
				att = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", head, profileName(c.GetProfile()), fmtSerial(c.GetSerial()), st, fmtTS(c.GetNotAfter()), att)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s, %s\n", plural(len(sets), "credential set", "credential sets"), plural(certs, "certificate", "certificates"))
	if resp.GetNextPageToken() != "" {
		fmt.Fprintln(w, "more sets exist: narrow the list with --person, --card-uuid, --fascn or --state")
	}
	return nil
}

func printActivations(w io.Writer, resp *credgwv1.ListActivationsResponse) error {
	acts := resp.GetActivations()
	if len(acts) == 0 {
		fmt.Fprintln(w, "no activations")
		return nil
	}
	tw := table(w)
	fmt.Fprintln(tw, "ACTIVATION\tSET\tSTATE\tATTEMPTS LEFT\tCREATED\tEXPIRES")
	for _, a := range acts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", cell(a.GetId()), cell(a.GetCredentialSetId()), word(a.GetState().String(), "ACTIVATION_STATE_"),
			a.GetAttemptsLeft(), fmtTS(a.GetCreatedAt()), fmtTS(a.GetExpiresAt()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, plural(len(acts), "activation", "activations"))
	if resp.GetNextPageToken() != "" {
		fmt.Fprintln(w, "more activations exist: narrow the list with --person, --card-uuid or --fascn")
	}
	return nil
}

func printAudit(w io.Writer, resp *credgwv1.ReadAuditLogResponse) error {
	evs := resp.GetEvents()
	if len(evs) == 0 {
		fmt.Fprintln(w, "no audit events")
		return nil
	}
	tw := table(w)
	fmt.Fprintln(tw, "SEQ\tTIME\tEVENT\tACTOR\tOUTCOME\tPERSON\tSERIALS\tDETAILS")
	for _, e := range evs {
		var serials []string
		for _, s := range e.GetSerials() {
			serials = append(serials, fmtSerial(s))
		}
		details := e.GetDetails()
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.GetSequence(), fmtTS(e.GetTime()), dash(e.GetType()), dash(e.GetActor()),
			dash(e.GetOutcome()), dash(e.GetPersonId()), dash(strings.Join(serials, ",")), dash(details))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, plural(len(evs), "event", "events"))
	if n := resp.GetNextSequence(); n > 0 && len(evs) >= 1000 {
		fmt.Fprintf(w, "more events: --after %d\n", n)
	}
	return nil
}

// printRevoked says which certificates were revoked.
func printRevoked(w io.Writer, verb string, serials []string) {
	if len(serials) == 0 {
		fmt.Fprintln(w, "no live certificate to revoke")
		return
	}
	fmt.Fprintf(w, "%s %s:\n", verb, plural(len(serials), "certificate", "certificates"))
	for _, s := range serials {
		fmt.Fprintf(w, "  serial=%s\n", fmtSerial(s))
	}
}
