package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// refusePINInFlags refuses a pkcs11: URI given on the command line (--uri,
// --card, --keystore, any flag) that carries a pin-value: the command line
// is visible to every local user in ps and stays in the shell history, and
// the help promises PINs never come from flags. Configuration files may
// still use pin-value (the pkcs11 package keeps it); only flags are
// refused. The message names the flag, never its value.
func refusePINInFlags(cmd *cobra.Command) error {
	var err error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if err != nil {
			return
		}
		for _, v := range flagValues(f) {
			if uriHasPINValue(v) {
				instead := "pin-source=FILE in the URI (a file readable by you only)"
				if cmd.Flags().Lookup("pin-file") != nil {
					instead += " or --pin-file FILE"
				}
				err = fmt.Errorf("--%s: a PIN in the URI (pin-value=) is refused on the command line, where other local users see it (ps) and the shell history keeps it; give %s instead", f.Name, instead)
				return
			}
		}
	})
	return err
}

// flagValues is what a flag holds: each element of a list flag, else its
// one value.
func flagValues(f *pflag.Flag) []string {
	if s, ok := f.Value.(pflag.SliceValue); ok {
		return s.GetSlice()
	}
	return []string{f.Value.String()}
}

// uriHasPINValue reports whether v is a pkcs11: URI with an attribute
// named pin-value, in its query or misplaced in its path, well formed or
// not: a URI that pkcs11.ParseURI refuses still put the PIN on the
// command line.
func uriHasPINValue(v string) bool {
	const scheme = "pkcs11:"
	if len(v) < len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return false
	}
	attrs := strings.FieldsFunc(v[len(scheme):], func(r rune) bool { return r == ';' || r == '?' || r == '&' })
	for _, attr := range attrs {
		name, _, _ := strings.Cut(attr, "=")
		if strings.EqualFold(strings.TrimSpace(name), "pin-value") {
			return true
		}
	}
	return false
}
