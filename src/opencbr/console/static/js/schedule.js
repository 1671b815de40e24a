// Policy execution times. The API's RRULE patterns are in UTC; the console shows and takes the
// browser's local times (guide 5.2: "The execution times refer to the local times of clients") and
// converts them the way the CLI does (src/opencbr/cli/policies.py, local_patterns).

export const WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
export const DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const DAY = 1440;
const WEEK = 7 * DAY;
const pad = (x) => String(x).padStart(2, "0");
const mod = (a, n) => ((a % n) + n) % n;

/** Minutes east of UTC of the browser now (what the console converts with). */
export function browserOffset() { return -new Date().getTimezoneOffset(); }

export function parseHHMM(t) {
  const m = /^(\d{1,2}):(\d{2})$/.exec(String(t).trim());
  if (!m || +m[1] > 23 || +m[2] > 59) throw new Error(`not a time HH:MM: ${t}`);
  return +m[1] * 60 + +m[2];
}

export const fmtHHMM = (minutes) => `${pad(Math.floor(minutes / 60))}:${pad(minutes % 60)}`;

/**
 * UTC RRULE patterns for local times ("HH:MM") on weekdays (indexes, 0 = Monday) or every `every` days.
 * A time that falls on the previous or next day in UTC moves its weekdays with it; times are grouped so
 * that each pattern's BYHOUR x BYMINUTE is exactly the times asked for.
 */
export function localToUtcPatterns({ times, weekdays = null, every = null, offset = browserOffset() }) {
  if (!times || !times.length) throw new Error("choose at least one execution time");
  if (!!(weekdays && weekdays.length) === !!every) throw new Error("choose days of the week or an interval in days");
  const groups = new Map();
  for (const t of times) {
    const utc = parseHHMM(t) - offset;
    const shift = Math.floor(utc / DAY);
    const minuteOfDay = mod(utc, DAY);
    const key = `${shift}|${minuteOfDay % 60}`;
    if (!groups.has(key)) groups.set(key, { shift, minute: minuteOfDay % 60, hours: new Set() });
    groups.get(key).hours.add(Math.floor(minuteOfDay / 60));
  }
  const out = [];
  const sorted = [...groups.values()].sort((a, b) => a.shift - b.shift || a.minute - b.minute);
  for (const g of sorted) {
    const hh = [...g.hours].sort((a, b) => a - b).join(",");
    if (weekdays && weekdays.length) {
      const days = [...new Set(weekdays.map((d) => mod(d + g.shift, 7)))].sort((a, b) => a - b);
      out.push(`FREQ=WEEKLY;BYDAY=${days.map((d) => WEEKDAYS[d]).join(",")};BYHOUR=${hh};BYMINUTE=${pad(g.minute)}`);
    } else {
      out.push(`FREQ=DAILY;INTERVAL=${every};BYHOUR=${hh};BYMINUTE=${pad(g.minute)}`);
    }
  }
  return out;
}

export function parsePattern(text) {
  const out = {};
  for (const part of String(text).split(";")) {
    const [k, v] = part.split("=");
    if (k && v !== undefined) out[k.trim().toUpperCase()] = v.trim().toUpperCase();
  }
  const nums = (v, dflt) => (v === undefined ? dflt : v.split(",").filter(Boolean).map(Number));
  return {
    freq: out.FREQ, interval: out.INTERVAL ? Number(out.INTERVAL) : 1,
    days: out.BYDAY ? out.BYDAY.split(",").map((d) => WEEKDAYS.indexOf(d)) : null,
    hours: nums(out.BYHOUR, [0]), minutes: nums(out.BYMINUTE, [0]),
  };
}

/**
 * The local form of UTC patterns: {mode: "week", days, times} or {mode: "days", every, times}; null when
 * the patterns cannot be shown that way (then the console shows them as RRULEs).
 */
export function utcPatternsToLocal(patterns, offset = browserOffset()) {
  if (!patterns || !patterns.length) return null;
  const parsed = patterns.map(parsePattern);
  if (parsed.some((p) => !["WEEKLY", "DAILY"].includes(p.freq))) return null;
  if (parsed.every((p) => p.freq === "DAILY")) {
    const every = parsed[0].interval;
    if (parsed.some((p) => p.interval !== every)) return null;
    const times = new Set();
    for (const p of parsed) for (const hr of p.hours) for (const mi of p.minutes) times.add(mod(hr * 60 + mi + offset, DAY));
    return { mode: "days", every, times: [...times].sort((a, b) => a - b).map(fmtHHMM) };
  }
  if (!parsed.every((p) => p.freq === "WEEKLY" && p.days && p.days.every((d) => d >= 0))) return null;
  const byTime = new Map();
  for (const p of parsed) {
    for (const d of p.days) for (const hr of p.hours) for (const mi of p.minutes) {
      const local = mod(d * DAY + hr * 60 + mi + offset, WEEK);
      const t = local % DAY;
      if (!byTime.has(t)) byTime.set(t, new Set());
      byTime.get(t).add(Math.floor(local / DAY));
    }
  }
  const sets = [...byTime.values()].map((s) => [...s].sort().join(","));
  if (new Set(sets).size !== 1) return null;
  return {
    mode: "week", days: [...byTime.values().next().value].sort((a, b) => a - b),
    times: [...byTime.keys()].sort((a, b) => a - b).map(fmtHHMM),
  };
}

/** A sentence for a policy's execution times, in local time. */
export function describePatterns(patterns, offset = browserOffset()) {
  const l = utcPatternsToLocal(patterns, offset);
  if (!l) return `${(patterns || []).join("; ")} (UTC)`;
  const at = l.times.join(", ");
  if (l.mode === "days") return l.every === 1 ? `Every day at ${at}` : `Every ${l.every} days at ${at}`;
  if (l.days.length === 7) return `Every day at ${at}`;
  return `${l.days.map((d) => DAY_NAMES[d]).join(", ")} at ${at}`;
}

/** The retention rule of an operation_definition, in words. */
export function describeRetention(od = {}) {
  let text;
  if ((od.max_backups ?? -1) > 0) text = `Keep the latest ${od.max_backups} backups`;
  else if (od.retention_duration_months) {
    const m = od.retention_duration_months;
    text = `Keep ${m === 12 ? "1 year" : m === 1 ? "1 month" : `${m} months`}`;
  } else if ((od.retention_duration_days ?? -1) > 0) text = `Keep ${od.retention_duration_days} days`;
  else text = "Permanent";
  const lt = [["day_backups", "daily"], ["week_backups", "weekly"], ["month_backups", "monthly"], ["year_backups", "yearly"]]
    .filter(([k]) => od[k]).map(([k, n]) => `${od[k]} ${n}`);
  return lt.length ? `${text}; long-term: ${lt.join(", ")}` : text;
}
