package keystore

import (
	"time"
)

// Refill intervals.
const (
	RefillDaily   = "daily"
	RefillMonthly = "monthly"
)

// maxRefillAmount keeps a refill's balance far from int64 overflow, however
// many credits AddCredits puts on top of it.
const maxRefillAmount = 1 << 53

// validRefill checks a schedule and returns it in stored form (a monthly
// Day of 0 written as 1), so records compare and print the same.
func validRefill(r Refill) (Refill, error) {
	switch r.Interval {
	case RefillDaily:
		if r.Day != 0 {
			return Refill{}, refuse(ErrInvalid, "refill day %d: a daily refill has no day of the month", r.Day)
		}
	case RefillMonthly:
		if r.Day == 0 {
			r.Day = 1
		}
		if r.Day < 1 || r.Day > 31 {
			return Refill{}, refuse(ErrInvalid, "refill day %d: want 1 to 31 (in shorter months, their last day)", r.Day)
		}
	default:
		return Refill{}, refuse(ErrInvalid, "refill interval %q: want %q or %q", r.Interval, RefillDaily, RefillMonthly)
	}
	if r.Amount < 0 || r.Amount > maxRefillAmount {
		return Refill{}, refuse(ErrInvalid, "refill amount %d: want 0 to %d", r.Amount, int64(maxRefillAmount))
	}
	return r, nil
}

// periodStart returns the latest refill boundary at or before now (UTC):
// midnight for daily, midnight of Day (clamped to the month's last day)
// for monthly.
func (r *Refill) periodStart(now time.Time) time.Time {
	now = now.UTC()
	y, m, d := now.Date()
	if r.Interval != RefillMonthly {
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	}
	if b := r.boundaryIn(y, m); !b.After(now) {
		return b
	}
	return r.boundaryIn(y, m-1)
}

// next returns the first refill boundary after t.
func (r *Refill) next(t time.Time) time.Time {
	start := r.periodStart(t)
	if r.Interval != RefillMonthly {
		return start.AddDate(0, 0, 1)
	}
	// One boundary per month, in that month (clamped to its last day).
	y, m, _ := start.Date()
	return r.boundaryIn(y, m+1)
}

// boundaryIn is the monthly boundary in month m of year y (m may be out of
// 1..12; time.Date normalizes it).
func (r *Refill) boundaryIn(y int, m time.Month) time.Time {
	first := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	y, m, _ = first.Date()
	return time.Date(y, m, min(r.day(), daysIn(y, m)), 0, 0, 0, 0, time.UTC)
}

func (r *Refill) day() int { return max(r.Day, 1) }

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// refillDue reports whether k's schedule has a refill not yet applied at
// now, and the period start it would be applied for. A schedule without a
// LastRefillAt (a record written by hand) counts as due.
func refillDue(k *Meter, now time.Time) (time.Time, bool) {
	if k.Refill == nil || k.CreditsRemaining == nil {
		return time.Time{}, false
	}
	start := k.Refill.periodStart(now)
	return start, k.LastRefillAt == nil || k.LastRefillAt.Before(start)
}

// applyRefill applies a due refill to a record inside a write transaction,
// as SetCredits would: the balance becomes Amount, and the epoch moves on,
// so that slices reserved in the old period are void everywhere. Missed
// periods do not stack. It reports whether it changed k.
func applyRefill(k *Meter, now time.Time) bool {
	start, due := refillDue(k, now)
	if !due {
		return false
	}
	n := k.Refill.Amount
	k.CreditsRemaining = &n
	k.CreditsEpoch++
	k.CreditsReserved = nil
	k.LastRefillAt = &start
	return true
}

// overlayRefill shows a due refill as if applied, without writing it:
// keys nobody has spent since the boundary still show the balance a Check
// would see. It reports whether it did.
func overlayRefill(k *Meter, now time.Time) bool {
	start, due := refillDue(k, now)
	if !due {
		return false
	}
	n := k.Refill.Amount
	k.CreditsRemaining = &n
	k.LastRefillAt = &start
	return true
}

// refillNext is when the fast path must next ask the record, in Unix ns:
// the boundary after k's last refill. 0: no schedule.
func refillNext(k *Meter) int64 {
	if k.Refill == nil || k.CreditsRemaining == nil {
		return 0
	}
	if k.LastRefillAt == nil {
		return 1 // due already: ask at once
	}
	return k.Refill.next(*k.LastRefillAt).UnixNano()
}

// setRefill sets (r) or removes (nil) k's schedule in an UpdateKey
// transaction.
func setRefill(k *storedKey, r *Refill, now time.Time) error {
	// A refill the old schedule had due is the key's: a change of
	// schedule must not lose it.
	applyRefill(&k.Meter, now)
	if r == nil {
		k.Refill, k.LastRefillAt = nil, nil
		return nil
	}
	v, err := validRefill(*r)
	if err != nil {
		return err
	}
	if k.CreditsOwner != "" {
		return refuse(ErrInvalid, "key %s spends the balance of key %s, its successor: set the refill there", k.ID, k.CreditsOwner)
	}
	if k.CreditsRemaining == nil {
		n := v.Amount
		k.CreditsRemaining = &n
	}
	start := v.periodStart(now)
	k.Refill, k.LastRefillAt = &v, &start
	return nil
}

// ValidRefill reports a schedule the store would refuse, for a config
// loader to refuse the same.
func ValidRefill(r Refill) error {
	_, err := validRefill(r)
	return err
}
