package keystore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/internal/vizerror"
	"github.com/keygate/keygate/keystore/apikey"
)

// Accounts: credit balances that belong to a tenant, an org or a user
// rather than to one key (Alloovium's "credits belong to the account").
// Every key under an owner that has an account spends from it, in the same
// pass as the key's own balance, if it has one: a request needs room in
// each balance that applies, and one refused by any spends from none.
//
// An account is a record in the accounts bucket holding a Meter, the same
// balance a key holds, spent through the same ledger of leased slices
// (credits.go): exact across replicas, with the same crash bound per
// account and process, refills on a schedule, SetCredits voiding slices.
// Which accounts apply to a key is read with the key (its credential
// lists their ids), so a Check does not look for accounts it has none of;
// creating or deleting an account drops every cached credential, on every
// replica, as a user record's change does.
//
// A grant (Options.AccountGrants) opens an account with its amount in the
// transaction that creates its owner: once per owner, exactly, whichever
// replica creates it and however many create others at the same time.

// Owner kinds of an account.
const (
	AccountTenant = "tenant"
	AccountOrg    = "org"
	AccountUser   = "user"
)

// Owner names an account's owner: a tenant (TenantID), an org (OrgID), or
// a user of a tenant (TenantID and UserID).
type Owner struct {
	Kind     string
	TenantID string
	OrgID    string
	UserID   string
}

// ID is the account's record id and ledger id: "tenant/<id>", "org/<id>"
// or "user/<tenant>/<user>". Key ids are UUIDs, so they never collide.
func (o Owner) ID() string {
	switch o.Kind {
	case AccountTenant:
		return AccountTenant + "/" + o.TenantID
	case AccountOrg:
		return AccountOrg + "/" + o.OrgID
	default:
		return AccountUser + "/" + o.TenantID + "/" + o.UserID
	}
}

func (o Owner) String() string {
	switch o.Kind {
	case AccountTenant:
		return "tenant " + o.TenantID
	case AccountOrg:
		return "org " + o.OrgID
	default:
		return "user " + o.UserID + " of tenant " + o.TenantID
	}
}

// isAccountID tells an account's ledger id from a key's.
func isAccountID(id string) bool {
	return strings.HasPrefix(id, AccountTenant+"/") || strings.HasPrefix(id, AccountOrg+"/") || strings.HasPrefix(id, AccountUser+"/")
}

// Account is an owner's credit balance.
type Account struct {
	ID       string    `json:"id"`
	Kind     string    `json:"kind"`
	TenantID string    `json:"tenant_id"`
	OrgID    string    `json:"org_id,omitempty"`
	UserID   string    `json:"user_id,omitempty"`
	Created  time.Time `json:"created_at"`
	// Granted is the grant the account was opened with when its owner was
	// created (Options.AccountGrants), and GrantedAt when; both empty for
	// an account opened by hand.
	Granted   int64      `json:"granted,omitempty"`
	GrantedAt *time.Time `json:"granted_at,omitempty"`
	Meter
}

// Grant is what a new owner of a kind starts with: Amount credits, and,
// optionally, a refill schedule (whose amount then sets the balance at
// each period's start).
type Grant struct {
	Amount int64
	Refill *Refill
}

// validGrants checks Options.AccountGrants.
func validGrants(g map[string]Grant) error {
	for kind, gr := range g {
		switch kind {
		case AccountTenant, AccountOrg, AccountUser:
		default:
			return fmt.Errorf("account grant for %q: want %q, %q or %q", kind, AccountTenant, AccountOrg, AccountUser)
		}
		if gr.Amount < 0 || gr.Amount > maxRefillAmount {
			return fmt.Errorf("account grant for %s: amount %d: want 0 to %d", kind, gr.Amount, int64(maxRefillAmount))
		}
		if gr.Refill != nil {
			if _, err := validRefill(*gr.Refill); err != nil {
				return fmt.Errorf("account grant for %s: %w", kind, err)
			}
		}
	}
	return nil
}

// grant opens o's account with the configured grant, inside the
// transaction creating o. A grant of nothing (no amount, no refill) opens
// none.
func (s *Store) grant(tx Tx, o Owner, now time.Time) error {
	g, ok := s.opts.AccountGrants[o.Kind]
	if !ok {
		return nil
	}
	s.anyAccounts.some()
	a := Account{ID: o.ID(), Kind: o.Kind, TenantID: o.TenantID, OrgID: o.OrgID, UserID: o.UserID, Created: now, Granted: g.Amount, GrantedAt: &now}
	n := g.Amount
	a.CreditsRemaining = &n
	if g.Refill != nil {
		r, _ := validRefill(*g.Refill) // checked by Open
		start := r.periodStart(now)
		a.Refill, a.LastRefillAt = &r, &start
	}
	return putJSON(tx, bucketAccounts, a.ID, &a)
}

// ErrNoAccount: the owner has no credit account (set a balance first).
var ErrNoAccount = errors.New("no credit account")

func noAccount(o Owner) error {
	return vizerror.WrapWithMessage(fmt.Errorf("%w: %s", ErrNoAccount, o), o.String()+" has no credit balance (set one first)")
}

// validOwner checks o's ids and that the owner exists, and fills an org's
// tenant. A user needs no record: keys name users by id alone.
func validOwner(tx Tx, o *Owner) error {
	switch o.Kind {
	case AccountTenant:
		if err := validText("tenant_id", o.TenantID, maxIDLen, true); err != nil {
			return err
		}
		_, err := getTenant(tx, o.TenantID)
		return err
	case AccountOrg:
		if err := validText("org_id", o.OrgID, maxIDLen, true); err != nil {
			return err
		}
		org, err := getOrg(tx, o.OrgID)
		if err != nil {
			return err
		}
		o.TenantID = org.TenantID
		return nil
	case AccountUser:
		if err := validUserRef(o.TenantID, o.UserID); err != nil {
			return err
		}
		_, err := getTenant(tx, o.TenantID)
		return err
	}
	return refuse(ErrInvalid, "account kind %q: want %s, %s or %s", o.Kind, AccountTenant, AccountOrg, AccountUser)
}

// Account returns o's account, its balance shown as Key shows a key's:
// the record's plus this process's unspent slice, a due refill applied.
func (s *Store) Account(ctx context.Context, o Owner) (Account, error) {
	var a Account
	err := s.view(ctx, func(tx Tx) error {
		if err := validOwner(tx, &o); err != nil {
			return err
		}
		found, err := getJSON(tx, bucketAccounts, o.ID(), &a)
		if err != nil {
			return err
		}
		if !found {
			return noAccount(o)
		}
		return nil
	})
	if err != nil {
		return Account{}, fmt.Errorf("get account: %w", err)
	}
	s.overlayMeter(a.ID, &a.Meter)
	return a, nil
}

// seen tells whether a store holds any record of an optional kind
// (credit accounts, user records), so that a lookup in a store without
// any (most, and every one that does not use them) reads no more than it
// did before they existed: on etcd every read is a round trip. It is found
// out by the first lookup and set by every such record written here or
// seen by the follower, before the cache is invalidated for it; a lookup
// that read "none" just before is not cached (its generation is
// outdated), and the accounts that invalidate nothing (grants to a new
// tenant or org) apply to no key yet. A follower that may have missed
// writes forgets it.
type seen struct{ state atomic.Int32 } // 0 unknown, 1 none, 2 some

func (a *seen) some() { a.state.Store(2) }

// forget makes the next lookup find out again.
func (a *seen) forget() { a.state.Store(0) }

// none reports whether tx's bucket holds no record, scanning for one when
// not known yet.
func (a *seen) none(tx Tx, bucket string) (bool, error) {
	switch a.state.Load() {
	case 1:
		return true, nil
	case 2:
		return false, nil
	}
	found := false
	err := tx.Scan(bucket, nil, nil, func(_, _ []byte) (bool, error) {
		found = true
		return false, nil
	})
	if err != nil {
		return false, err
	}
	if found {
		a.some()
	} else {
		a.state.CompareAndSwap(0, 1)
	}
	return !found, nil
}

// accountsOf lists the ids of the accounts a key with these owners spends
// from, in the order they are charged: user, org, tenant. Read with the
// key, in its snapshot.
func (s *Store) accountsOf(tx Tx, tenantID, orgID, userID string) ([]string, error) {
	if none, err := s.anyAccounts.none(tx, bucketAccounts); none || err != nil {
		return nil, err
	}
	var ids []string
	for _, o := range [...]Owner{
		{Kind: AccountUser, TenantID: tenantID, UserID: userID},
		{Kind: AccountOrg, OrgID: orgID},
		{Kind: AccountTenant, TenantID: tenantID},
	} {
		if o.Kind == AccountUser && userID == "" || o.Kind == AccountOrg && orgID == "" {
			continue
		}
		id := o.ID()
		v, err := tx.Get(bucketAccounts, []byte(id))
		if err != nil {
			return nil, err
		}
		if v != nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// SetAccountCredits sets o's balance to n, opening the account if it has
// none. Like SetCredits, it voids every slice reserved before, so the
// balance afterwards is exactly n.
func (s *Store) SetAccountCredits(ctx context.Context, o Owner, n int64) (Account, error) {
	if n < 0 {
		return Account{}, fmt.Errorf("set credits: %w", refuse(ErrInvalid, "balance %d is negative", n))
	}
	return s.changeAccount(ctx, o, true, func(a *Account) error {
		applyRefill(&a.Meter, s.now())
		a.CreditsRemaining = &n
		a.CreditsEpoch++
		a.CreditsReserved = nil
		return nil
	})
}

// AddAccountCredits adds n (which may be negative, down to zero) to o's
// balance. Slices reserved before stay valid.
func (s *Store) AddAccountCredits(ctx context.Context, o Owner, n int64) (Account, error) {
	return s.changeAccount(ctx, o, false, func(a *Account) error {
		applyRefill(&a.Meter, s.now())
		v := max(*a.CreditsRemaining+n, 0)
		a.CreditsRemaining = &v
		return nil
	})
}

// SetAccountRefill sets (r) or removes (nil) o's refill schedule. Setting
// one records the current period's start as the last refill, so the first
// is at the next boundary.
func (s *Store) SetAccountRefill(ctx context.Context, o Owner, r *Refill) (Account, error) {
	var v Refill
	if r != nil {
		var err error
		if v, err = validRefill(*r); err != nil {
			return Account{}, fmt.Errorf("set refill: %w", err)
		}
	}
	return s.changeAccount(ctx, o, false, func(a *Account) error {
		now := s.now()
		applyRefill(&a.Meter, now)
		if r == nil {
			a.Refill, a.LastRefillAt = nil, nil
			return nil
		}
		start := v.periodStart(now)
		a.Refill, a.LastRefillAt = &v, &start
		return nil
	})
}

// changeAccount applies fn to o's account in one transaction. open: an
// owner with no account gets one (balance 0 before fn).
func (s *Store) changeAccount(ctx context.Context, o Owner, open bool, fn func(*Account) error) (Account, error) {
	var (
		out    Account
		opened bool
	)
	err := s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error {
		opened = false
		if err := validOwner(tx, &o); err != nil {
			return err
		}
		var a Account
		found, err := getJSON(tx, bucketAccounts, o.ID(), &a)
		if err != nil {
			return err
		}
		if !found {
			if !open {
				return noAccount(o)
			}
			s.anyAccounts.some()
			zero := int64(0)
			a = Account{ID: o.ID(), Kind: o.Kind, TenantID: o.TenantID, OrgID: o.OrgID, UserID: o.UserID, Created: s.now()}
			a.CreditsRemaining = &zero
			opened = true
		}
		if err := fn(&a); err != nil {
			return err
		}
		out = a
		return putJSON(tx, bucketAccounts, a.ID, &a)
	})
	if opened || err != nil {
		// Which accounts apply is part of every cached credential of the
		// owner's keys. (A failed commit may have landed.)
		s.cache.invalidateAll()
	}
	if err != nil {
		return Account{}, fmt.Errorf("change credits of %s: %w", o, err)
	}
	s.ledger.rebase(out.ID, &out.Meter, "")
	s.overlayMeter(out.ID, &out.Meter)
	return out, nil
}

// DeleteAccount closes o's account: its keys stop spending from it (their
// own balances, if any, still apply). Slices other replicas hold are void.
func (s *Store) DeleteAccount(ctx context.Context, o Owner) error {
	err := s.update(ctx, func(tx Tx, _ func(apikey.Hash)) error {
		if err := validOwner(tx, &o); err != nil {
			return err
		}
		v, err := tx.Get(bucketAccounts, []byte(o.ID()))
		if err != nil {
			return err
		}
		if v == nil {
			return noAccount(o)
		}
		return tx.Delete(bucketAccounts, []byte(o.ID()))
	})
	s.cache.invalidateAll()
	if err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	s.ledger.rebase(o.ID(), nil, "")
	return nil
}

// Accounts lists the accounts of a tenant: its own, its orgs' and its
// users'.
func (s *Store) Accounts(ctx context.Context, tenantID string) ([]Account, error) {
	var out []Account
	err := s.view(ctx, func(tx Tx) error {
		if _, err := getTenant(tx, tenantID); err != nil {
			return err
		}
		var a Account
		found, err := getJSON(tx, bucketAccounts, AccountTenant+"/"+tenantID, &a)
		if err != nil {
			return err
		}
		if found {
			out = append(out, a)
		}
		var orgs []string
		err = forEachJSON(tx, bucketOrgs, func(o *Org) {
			if o.TenantID == tenantID {
				orgs = append(orgs, o.ID)
			}
		})
		if err != nil {
			return err
		}
		for _, id := range orgs {
			var a Account
			found, err := getJSON(tx, bucketAccounts, AccountOrg+"/"+id, &a)
			if err != nil {
				return err
			}
			if found {
				out = append(out, a)
			}
		}
		return tx.Scan(bucketAccounts, []byte(AccountUser+"/"+tenantID+"/"), nil, func(k, v []byte) (bool, error) {
			var a Account
			if err := json.Unmarshal(v, &a); err != nil {
				return false, fmt.Errorf("decode account %s: %w", k, err)
			}
			out = append(out, a)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	for i := range out {
		s.overlayMeter(out[i].ID, &out[i].Meter)
	}
	return out, nil
}

// AccountUsage sums, per hour or UTC day from from to to, the usage of
// the keys under o (credits included: what the account's keys spent): a
// tenant's keys, an org's, or the keys of the tenant that name the user.
// Like UsageTotals it counts the keys o holds now; it needs no account.
func (s *Store) AccountUsage(ctx context.Context, o Owner, from, to time.Time, g Granularity) ([]UsageBucket, error) {
	start, fh, th, err := usageRange(from, to, g)
	if err != nil {
		return nil, fmt.Errorf("usage of %s: %w", o, err)
	}
	hours := map[int64]UsageCounts{}
	err = s.view(ctx, func(tx Tx) error {
		clear(hours)
		if err := validOwner(tx, &o); err != nil {
			return err
		}
		bucket, parent := bucketKeysByTenant, o.TenantID
		if o.Kind == AccountOrg {
			bucket, parent = bucketKeysByOrg, o.OrgID
		}
		return s.scanIDs(tx, bucket, parent, func(id string) error {
			if o.Kind == AccountUser {
				var k storedKey
				if found, err := getKeyRecord(tx, id, &k); err != nil || !found || k.UserID != o.UserID {
					return err
				}
			}
			rows, _, err := s.hourRows(tx, id, fh, th)
			for h, c := range rows {
				sum := hours[h]
				sum.add(c)
				hours[h] = sum
			}
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("usage of %s: %w", o, err)
	}
	return usageBuckets(hours, start, fh, th, g), nil
}
