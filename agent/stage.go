package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// confirmer confirms an installed package to the gateway and returns the
// credential set's id.
type confirmer func(ctx context.Context, redemptionID string, sum []byte) (string, error)

// installStaged is fetchAndInstall into a staging directory made beside
// dir (the same filesystem, so each move is a rename; 0700, the key files
// in it 0600): the files appear in dir only once everything in the package
// verified and the gateway confirmed, so a failure at any step leaves dir
// as it was. The staging directory is removed, unless the confirmation got
// no answer (the gateway may have taken it: ConfirmUnknownError) or a move
// fails after the confirmation (then dir holds the earlier files again,
// moveIntoPlace); the error then names the staging directory, which holds
// the new files.
func installStaged(ctx context.Context, dir, prefix string, o Options, open opener, confirm confirmer) (*Result, error) {
	if err := checkOutDir(dir); err != nil {
		return nil, err
	}
	nameEarlierStaging(dir, o.Events)
	staging, err := os.MkdirTemp(dir, prefix)
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(staging)
		}
	}()
	o.OutDir = staging
	res, err := fetchAndInstall(ctx, o, open, confirm)
	var unknown *ConfirmUnknownError
	if errors.As(err, &unknown) && o.Keystore == nil {
		// The gateway may have confirmed: the credentials are kept where
		// the person can move them into place.
		keep = true
		return nil, fmt.Errorf("%w; they are in %s: move them into %s if the gateway shows the credentials active", err, staging, dir)
	}
	if err != nil {
		return nil, err
	}
	if err := moveIntoPlace(dir, staging, res.Files); err != nil {
		keep = true
		return nil, fmt.Errorf("agent: installed and confirmed, but moving the files into %s failed, so the files there are the earlier ones again "+
			"(unless said below); the new ones are in %s: %w", dir, staging, err)
	}
	for i, f := range res.Files {
		if filepath.Dir(f) == staging {
			res.Files[i] = filepath.Join(dir, filepath.Base(f))
		}
	}
	if len(res.KeyHistoryFiles) > 0 {
		removeStaleKeyFiles(dir, res.KeyHistoryFiles, o.Events)
	}
	return res, nil
}

// nameEarlierStaging says which staging directories of an earlier run
// are in dir. A run that was killed mid-install, or whose confirmation got
// no answer, leaves one; it may hold the device keys of a set the gateway
// confirmed, so it is not removed here: the person moves its files into
// place or removes it once the gateway shows which credentials are active.
//
// Redemptions (.redeem-) and renewals (.renew-) install into the same
// directory, so each names the other's too.
func nameEarlierStaging(dir string, events func(Event)) {
	des, err := os.ReadDir(dir)
	if err != nil || events == nil {
		return // a missing dir is made, or refused, by MkdirTemp
	}
	for _, de := range des {
		if de.IsDir() && (strings.HasPrefix(de.Name(), ".redeem-") || strings.HasPrefix(de.Name(), ".renew-")) {
			events(Event{Message: fmt.Sprintf("an earlier install that did not finish left %s: it may hold the keys of credentials the gateway confirmed; "+
				"move its files into %s if the gateway shows them active, else remove it", filepath.Join(dir, de.Name()), dir)})
		}
	}
}

// moveIntoPlace moves the files of staging (others are an Options.Install
// hook's own) into dir, each by a rename, all or none: a file of the same
// name in dir is first set aside in staging (its name with ".earlier"),
// and should a move fail, the new files already moved go back to staging
// and the earlier ones back into dir, so that dir never holds a mix of
// two installs.
func moveIntoPlace(dir, staging string, files []string) error {
	type moved struct{ from, to, earlier string }
	var done []moved
	// undo puts back what moved; what it cannot put back is said.
	undo := func(cause error) error {
		errs := []error{cause}
		for i := len(done) - 1; i >= 0; i-- {
			m := done[i]
			if err := os.Rename(m.to, m.from); err != nil {
				errs = append(errs, fmt.Errorf("and taking %s back out failed: %w", m.to, err))
				continue
			}
			if m.earlier != "" {
				if err := os.Rename(m.earlier, m.to); err != nil {
					errs = append(errs, fmt.Errorf("and the earlier %s could not be put back (it is %s): %w", m.to, m.earlier, err))
				}
			}
		}
		return errors.Join(errs...)
	}
	for _, f := range files {
		if filepath.Dir(f) != staging {
			continue
		}
		m := moved{from: f, to: filepath.Join(dir, filepath.Base(f))}
		// Anything but a directory is set aside (a symlink too): the
		// rename would replace it.
		if fi, err := os.Lstat(m.to); err == nil && !fi.IsDir() {
			m.earlier = f + ".earlier"
			if err := os.Rename(m.to, m.earlier); err != nil {
				return undo(fmt.Errorf("setting the earlier %s aside: %w", m.to, err))
			}
		}
		if err := os.Rename(m.from, m.to); err != nil {
			cause := fmt.Errorf("moving %s into place: %w", filepath.Base(f), err)
			if m.earlier != "" {
				if rerr := os.Rename(m.earlier, m.to); rerr != nil {
					cause = errors.Join(cause, fmt.Errorf("and the earlier %s could not be put back (it is %s): %w", m.to, m.earlier, rerr))
				}
			}
			return undo(cause)
		}
		done = append(done, m)
	}
	return nil
}

// removeStaleKeyFiles removes the one-key files of an earlier install
// (KeyFileName) that this one did not write: an earlier history key's name
// holds its position and date, so it would otherwise stay beside the new
// files as if it were part of the history. A failure is reported, not
// returned: the new files are in place and confirmed.
func removeStaleKeyFiles(dir string, keep []string, events func(Event)) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !keyFile.MatchString(e.Name()) || slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && events != nil {
			events(Event{Message: fmt.Sprintf("%s is from an earlier install and could not be removed: %v", e.Name(), err)})
		}
	}
}
