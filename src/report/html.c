/* html: the clinic report as one self-contained page: inline CSS, inline SVG charts, A4 print. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "record.h"
#include "report.h"
#include "rules.h"
#include "store.h"
#include "util.h"

/* A report longer than this many days is drawn day by day up to it (the tables hold all). */
#define HTML_DAYS_MAX 400

/* Chart geometry, in SVG user units (the SVG scales to the page width). */
#define W 720
#define PLOT_L 44
#define PLOT_R 12
#define PLOT_W (W - PLOT_L - PLOT_R)

static void esc(FILE *f, const char *s) {
        for (; s && *s; s++)
                switch (*s) {
                case '&': fputs("&amp;", f); break;
                case '<': fputs("&lt;", f); break;
                case '>': fputs("&gt;", f); break;
                case '"': fputs("&quot;", f); break;
                case '\'': fputs("&#39;", f); break;
                default: fputc(*s, f);
                }
}

static const char *iso(int64_t t, char buf[static CLOCK_ISO_MAX]) {
        if (!t)
                return "-";
        clock_format_iso(t, buf);
        buf[16] = '\0';   /* "YYYY-MM-DDTHH:MM": minutes are enough for people */
        buf[10] = ' ';
        return buf;
}

typedef struct Days {
        int64_t start[HTML_DAYS_MAX + 1];   /* start[i]..start[i+1] is day i */
        size_t n;
} Days;

static int days_fill(Days *d, int64_t since, int64_t until) {
        d->n = 0;
        d->start[0] = since;
        while (d->n < HTML_DAYS_MAX && d->start[d->n] < until) {
                int r = clock_local_day_start(d->start[d->n], -1, &d->start[d->n + 1]);
                if (r < 0)
                        return r;
                d->n++;
        }
        return 0;
}

static int day_of(const Days *d, int64_t t) {
        for (size_t i = 0; i < d->n; i++)
                if (t >= d->start[i] && t < d->start[i + 1])
                        return (int) i;
        return -1;
}

/* x of an instant over the whole period. */
static double x_at(const ReportData *r, int64_t t) {
        double span = (double) (r->until - r->since);

        if (t < r->since)
                t = r->since;
        if (t > r->until)
                t = r->until;
        return PLOT_L + PLOT_W * (double) (t - r->since) / span;
}

/* Day labels under a time axis: at most about 12 of them. */
static void day_axis(FILE *f, const ReportData *r, const Days *d, int y) {
        size_t step = d->n / 12 + 1;
        char date[11];

        fprintf(f, "<line class=\"axis\" x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\"/>\n", PLOT_L, y, W - PLOT_R, y);
        for (size_t i = 0; i < d->n; i += step) {
                double x = x_at(r, d->start[i]);
                clock_format_date(d->start[i], date);
                fprintf(f, "<line class=\"tick\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>"
                           "<text class=\"label\" x=\"%.1f\" y=\"%d\">%s</text>\n",
                        x, y, x, y + 4, x + 2, y + 15, date + 5);
        }
}

/* ---- chart 1: cold minutes a day, against the prescription ---- */

static void chart_cold(FILE *f, const ReportData *r, const Days *d) {
        enum { H = 200, TOP = 12, BOTTOM = 28 };
        double minutes[HTML_DAYS_MAX] = { 0 }, ymax, rx_min = r->rx.cold_s / 60.0;
        bool compliant[HTML_DAYS_MAX] = { false };
        double bw = (double) PLOT_W / (double) (d->n ? d->n : 1);

        for (size_t i = 0; i < r->n_sessions; i++) {
                const SessionRecord *s = &r->sessions[i];
                int k;

                if (s->mode != THERAPY_COLD || !s->started_at || s->outcome == OUTCOME_REFUSED ||
                    s->outcome == OUTCOME_NOT_STARTED)
                        continue;
                k = day_of(d, s->started_at);
                if (k < 0)
                        continue;
                minutes[k] += s->duration_s / 60.0;
                compliant[k] |= s->compliant;
        }
        ymax = rx_min * 2;
        for (size_t i = 0; i < d->n; i++)
                if (minutes[i] > ymax)
                        ymax = minutes[i];
        ymax = ymax < 10 ? 10 : ymax;

        fprintf(f, "<figure class=\"chart\"><figcaption>Cold minutes a day, against the prescription "
                   "(%.0f min after each run)</figcaption>\n"
                   "<svg id=\"chart-cold\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Cold minutes a day\">\n",
                rx_min, W, H);
        for (int g = 0; g <= 2; g++) {
                double v = ymax * g / 2, y = TOP + (H - TOP - BOTTOM) * (1 - v / ymax);
                fprintf(f, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>"
                           "<text class=\"label\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.0f</text>\n",
                        PLOT_L, y, W - PLOT_R, y, PLOT_L - 4, y + 4, v);
        }
        for (size_t i = 0; i < d->n; i++) {
                double h = (H - TOP - BOTTOM) * minutes[i] / ymax;
                char date[11];

                if (minutes[i] <= 0)
                        continue;
                clock_format_date(d->start[i], date);
                fprintf(f, "<rect class=\"bar %s\" data-day=\"%s\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\">"
                           "<title>%s: %.0f min of cold%s</title></rect>\n",
                        compliant[i] ? "ok" : "short", date, PLOT_L + bw * i + bw * 0.15, H - BOTTOM - h,
                        bw * 0.7, h, date, minutes[i], compliant[i] ? "" : ", none of it a full session (R7)");
        }
        {
                double y = TOP + (H - TOP - BOTTOM) * (1 - rx_min / ymax);
                fprintf(f, "<line class=\"rx\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"><title>Prescribed: %.0f min</title></line>\n"
                           "<text class=\"label rx-label\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">prescribed %.0f min</text>\n",
                        PLOT_L, y, W - PLOT_R, y, rx_min, W - PLOT_R, y - 4, rx_min);
        }
        day_axis(f, r, d, H - BOTTOM);
        fputs("</svg></figure>\n", f);
}

/* ---- chart 2: runs, and whether a cold session followed ---- */

static const char *run_status(const RunRecord *run, const SessionRecord *s, char *buf, size_t size) {
        if (*run->followed_by)
                snprintf(buf, size, "followed by a full cold session");
        else if (*run->cold_press && s->outcome == OUTCOME_REFUSED)
                snprintf(buf, size, "not followed: cold was refused (%s)", refusal_reason_to_string(s->refusal));
        else if (*run->cold_press)
                snprintf(buf, size, "not followed: cold %s after %" PRIu32 " min", session_outcome_to_string(s->outcome),
                         s->duration_s / 60);
        else
                snprintf(buf, size, "not followed: no cold within %d min", RUN_FOLLOW_WINDOW_S / 60);
        return buf;
}

static void chart_runs(FILE *f, const ReportData *r, const Days *d) {
        enum { H = 110, RUN_Y = 34, COLD_Y = 70, AXIS_Y = 86 };
        char when[CLOCK_ISO_MAX], why[128];

        fprintf(f, "<figure class=\"chart\"><figcaption>Runs (%" PRIu32 ", %" PRIu32 " followed by cold within %d min) "
                   "and cold sessions</figcaption>\n"
                   "<svg id=\"chart-runs\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Runs and cold sessions\">\n"
                   "<text class=\"label\" x=\"%d\" y=\"%d\" text-anchor=\"end\">runs</text>"
                   "<text class=\"label\" x=\"%d\" y=\"%d\" text-anchor=\"end\">cold</text>\n",
                r->compliance.runs, r->compliance.runs_followed, RUN_FOLLOW_WINDOW_S / 60, W, H,
                PLOT_L - 4, RUN_Y + 4, PLOT_L - 4, COLD_Y + 4);
        for (size_t i = 0; i < r->n_sessions; i++) {
                const SessionRecord *s = &r->sessions[i];
                double x = x_at(r, s->requested_at);

                if (s->mode != THERAPY_COLD)
                        continue;
                fprintf(f, "<rect class=\"cold %s\" x=\"%.1f\" y=\"%d\" width=\"3\" height=\"14\"><title>cold %s: %s</title></rect>\n",
                        s->compliant ? "ok" : "short", x - 1.5, COLD_Y - 7, iso(s->requested_at, when),
                        session_outcome_to_string(s->outcome));
        }
        for (size_t i = 0; i < r->n_runs; i++) {
                const RunRecord *run = &r->runs[i];
                double x = x_at(r, run->ended_at);
                bool ok = *run->followed_by;

                run_status(run, &r->run_sessions[i], why, sizeof why);
                if (ok)
                        fprintf(f, "<circle class=\"run followed\" cx=\"%.1f\" cy=\"%d\" r=\"6\">", x, RUN_Y);
                else
                        fprintf(f, "<path class=\"run missed\" d=\"M%.1f %d l10 10 m0 -10 l-10 10\">", x - 5, RUN_Y - 5);
                fprintf(f, "<title>run ended %s: ", iso(run->ended_at, when));
                esc(f, why);
                fputs(ok ? "</title></circle>\n" : "</title></path>\n", f);
        }
        day_axis(f, r, d, AXIS_Y);
        fputs("</svg>\n<p class=\"legend\"><span class=\"key followed\"></span> followed by cold "
              "<span class=\"key missed\"></span> not followed <span class=\"key cold\"></span> cold session</p>"
              "</figure>\n", f);
}

/* ---- chart 3: pain, with the injury marked ---- */

static void chart_pain(FILE *f, const ReportData *r, const Days *d) {
        enum { H = 190, TOP = 14, BOTTOM = 28 };
        char when[CLOCK_ISO_MAX];

#define PAIN_Y(score) (TOP + (H - TOP - BOTTOM) * (1 - (score) / 10.0))
        fprintf(f, "<figure class=\"chart\"><figcaption>Pain (0-10) from the diary, with the injury marked</figcaption>\n"
                   "<svg id=\"chart-pain\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Pain trend\">\n", W, H);
        for (int v = 0; v <= 10; v += 5)
                fprintf(f, "<line class=\"grid\" x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>"
                           "<text class=\"label\" x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%d</text>\n",
                        PLOT_L, PAIN_Y(v), W - PLOT_R, PAIN_Y(v), PLOT_L - 4, PAIN_Y(v) + 4, v);
        for (size_t i = 0; i < r->n_injuries; i++) {
                const InjuryRecord *in = &r->injuries[i];
                int64_t at = in->at;

                /* A date-only injury is drawn at the start of its day; R2 counts from its end. */
                if (*in->date && clock_local_day_start(in->at - 1, 0, &at) < 0)
                        at = in->at;
                if (at < r->since || at >= r->until)
                        continue;
                fprintf(f, "<line class=\"injury\" x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"><title>injury %s</title></line>"
                           "<text class=\"label injury-label\" x=\"%.1f\" y=\"%d\">injury</text>\n",
                        x_at(r, at), TOP, x_at(r, at), H - BOTTOM, *in->date ? in->date : iso(in->at, when),
                        x_at(r, at) + 3, TOP + 10);
        }
        if (r->n_diary > 0) {
                fputs("<polyline class=\"pain\" points=\"", f);
                for (size_t i = 0; i < r->n_diary; i++)
                        fprintf(f, "%s%.1f,%.1f", i ? " " : "", x_at(r, r->diary[i].at), PAIN_Y(r->diary[i].score));
                fputs("\"/>\n", f);
        }
        for (size_t i = 0; i < r->n_diary; i++) {
                const DiaryEntry *e = &r->diary[i];
                bool red = (e->flags & (DIARY_SWELLING | DIARY_POP)) == (DIARY_SWELLING | DIARY_POP);

                fprintf(f, "<circle class=\"pain-point%s\" cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\"><title>%s: %u/10, %s</title></circle>\n",
                        red ? " red-flag" : "", x_at(r, e->at), PAIN_Y(e->score), iso(e->at, when), e->score,
                        diary_where_to_string(e->where));
        }
        day_axis(f, r, d, H - BOTTOM);
        fputs("</svg></figure>\n", f);
#undef PAIN_Y
}

/* ---- chart 4: alerts on the timeline ---- */

static void chart_alerts(FILE *f, const ReportData *r, const Days *d) {
        enum { H = 70, Y = 26, AXIS_Y = 46 };
        char when[CLOCK_ISO_MAX];

        fprintf(f, "<figure class=\"chart\"><figcaption>Alerts (%zu)</figcaption>\n"
                   "<svg id=\"chart-alerts\" viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"Alerts\">\n",
                r->n_alerts, W, H);
        for (size_t i = 0; i < r->n_alerts; i++) {
                const AlertRecord *a = &r->alerts[i];
                bool urgent = a->kind == ALERT_RED_FLAG || a->kind == ALERT_SAFETY_STOP;
                double x = x_at(r, a->at);

                fprintf(f, "<path class=\"alert %s%s\" data-kind=\"%s\" d=\"M%.1f %d l7 12 h-14 z\"><title>%s %s: ",
                        urgent ? "urgent" : "warning", a->acked_at ? " acked" : "", alert_kind_to_string(a->kind),
                        x, Y - 8, iso(a->at, when), alert_kind_to_string(a->kind));
                esc(f, a->text);
                fputs(a->acked_at ? " (acknowledged)</title></path>\n" : "</title></path>\n", f);
        }
        day_axis(f, r, d, AXIS_Y);
        fputs("</svg></figure>\n", f);
}

/* ---- tables ---- */

static void compliance_table(FILE *f, const ReportData *r) {
        const Compliance *c = &r->compliance;

        fprintf(f, "<table id=\"compliance\" class=\"kv\">\n"
                   "<tr><th>Days with a full cold session</th><td>%" PRIu32 " of %zu</td></tr>\n"
                   "<tr><th>Cold sessions completed (10 min or more, R7)</th><td>%" PRIu32 "</td></tr>\n"
                   "<tr><th>Cold sessions stopped early</th><td>%" PRIu32 "</td></tr>\n"
                   "<tr><th>Therapy minutes</th><td>%" PRIu32 "</td></tr>\n"
                   "<tr><th>Runs followed by cold within %d min</th><td>%" PRIu32 " of %" PRIu32 "</td></tr>\n"
                   "<tr><th>Cold requests refused</th><td>%" PRIu32 "</td></tr>\n"
                   "<tr><th>Heat requests refused</th><td>%" PRIu32 "</td></tr>\n"
                   "<tr><th>Heat asked for in the first week after the injury</th><td>%" PRIu32 "</td></tr>\n"
                   "</table>\n",
                c->days_with_cold, (size_t) ((r->until - r->since + RULES_DAY_S / 2) / RULES_DAY_S),
                c->cold_completed, c->cold_incomplete, c->minutes, RUN_FOLLOW_WINDOW_S / 60,
                c->runs_followed, c->runs, c->cold_refused, c->heat_refused, c->heat_refused_first_week);
}

static void runs_table(FILE *f, const ReportData *r) {
        char when[CLOCK_ISO_MAX], why[128];

        fputs("<table id=\"runs\"><caption>Runs</caption>\n"
              "<tr><th>Ended</th><th>Minutes</th><th>km</th><th>Cold after it</th></tr>\n", f);
        for (size_t i = 0; i < r->n_runs; i++) {
                const RunRecord *run = &r->runs[i];

                fprintf(f, "<tr class=\"%s\"><td>%s</td><td>", *run->followed_by ? "ok" : "missed", iso(run->ended_at, when));
                if (run->minutes)
                        fprintf(f, "%" PRIu32, run->minutes);
                fputs("</td><td>", f);
                if (run->meters)
                        fprintf(f, "%.1f", run->meters / 1000.0);
                fputs("</td><td>", f);
                esc(f, run_status(run, &r->run_sessions[i], why, sizeof why));
                fputs("</td></tr>\n", f);
        }
        if (r->n_runs == 0)
                fputs("<tr><td colspan=\"4\">No runs recorded in this period.</td></tr>\n", f);
        fputs("</table>\n", f);
}

static void sessions_table(FILE *f, const ReportData *r) {
        char when[CLOCK_ISO_MAX];

        fputs("<table id=\"sessions\"><caption>Sessions, refused requests included</caption>\n"
              "<tr><th>Requested</th><th>Mode</th><th>By</th><th>Outcome</th><th>Ran</th><th>Full (R7)</th><th>Refusal</th></tr>\n", f);
        for (size_t i = 0; i < r->n_sessions; i++) {
                const SessionRecord *s = &r->sessions[i];

                fprintf(f, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%" PRIu32 ":%02" PRIu32 "</td><td>%s</td><td>",
                        iso(s->requested_at, when), therapy_mode_to_string(s->mode), request_source_to_string(s->source),
                        session_outcome_to_string(s->outcome), s->duration_s / 60, s->duration_s % 60,
                        s->mode == THERAPY_COLD ? (s->compliant ? "yes" : "no") : "");
                if (s->refusal != REFUSAL_NONE) {
                        esc(f, refusal_reason_to_string(s->refusal));
                        if (s->minutes_left)
                                fprintf(f, " (%u min left)", s->minutes_left);
                }
                fputs("</td></tr>\n", f);
        }
        if (r->n_sessions == 0)
                fputs("<tr><td colspan=\"7\">No sessions in this period.</td></tr>\n", f);
        fputs("</table>\n", f);
}

static void alerts_table(FILE *f, const ReportData *r) {
        char when[CLOCK_ISO_MAX], acked[CLOCK_ISO_MAX], session[CLOCK_ISO_MAX];

        fputs("<table id=\"alerts\"><caption>Alerts</caption>\n"
              "<tr><th>#</th><th>Raised</th><th>Kind</th><th>What</th><th>Session</th><th>Acknowledged</th></tr>\n", f);
        for (size_t i = 0; i < r->n_alerts; i++) {
                const AlertRecord *a = &r->alerts[i];

                fprintf(f, "<tr><td>%" PRId64 "</td><td>%s</td><td>%s</td><td>", a->id, iso(a->at, when),
                        alert_kind_to_string(a->kind));
                esc(f, a->text);
                fputs("</td><td>", f);
                /* The session it is about, by the time it was requested, as the sessions table shows it. */
                if (a->session_id[0]) {
                        const SessionRecord *s = NULL;

                        for (size_t k = 0; !s && k < r->n_sessions; k++)
                                if (streq(r->sessions[k].session_id, a->session_id))
                                        s = &r->sessions[k];
                        if (s)
                                fprintf(f, "%s %s", therapy_mode_to_string(s->mode), iso(s->requested_at, session));
                        else
                                fprintf(f, "%.8s", a->session_id);
                }
                fprintf(f, "</td><td>%s</td></tr>\n", a->acked_at ? iso(a->acked_at, acked) : "open");
        }
        if (r->n_alerts == 0)
                fputs("<tr><td colspan=\"6\">No alerts in this period.</td></tr>\n", f);
        fputs("</table>\n", f);
}

/* The append-only change history (store_audit_list) in the period. */
static void history_table(FILE *f, const ReportData *r) {
        char when[CLOCK_ISO_MAX];

        fputs("<table id=\"history\"><caption>Changes (injury, prescription, adoption)</caption>\n"
              "<tr><th>Time</th><th>What</th><th>Source</th><th>Who</th></tr>\n", f);
        for (size_t i = 0; i < r->n_history; i++) {
                const AuditRecord *e = &r->history[i];

                fprintf(f, "<tr><td>%s</td><td>", iso(e->at, when));
                esc(f, e->what);
                if (*e->detail) {
                        fputs(": ", f);
                        esc(f, e->detail);
                }
                fprintf(f, "</td><td>%s", request_source_to_string(e->source));
                if (*e->topic) {
                        fputs(" (", f);
                        esc(f, e->topic);
                        fputs(")", f);
                }
                fputs("</td><td>", f);
                if (e->uid >= 0)
                        fprintf(f, "uid %" PRId64, e->uid);
                else if (*e->claimed_client) {
                        fputs("claims &ldquo;", f);
                        esc(f, e->claimed_client);
                        fputs("&rdquo; (not verified)", f);
                } else
                        fputs("-", f);
                fputs("</td></tr>\n", f);
        }
        if (r->n_history == 0)
                fputs("<tr><td colspan=\"4\">No changes in this period.</td></tr>\n", f);
        fputs("</table>\n", f);
}

static const char css[] =
        "@page { size: A4; margin: 14mm 12mm; }\n"
        "* { box-sizing: border-box; }\n"
        "body { font: 10.5pt/1.35 'DejaVu Sans', Arial, sans-serif; color: #1b1f24; margin: 0 auto; max-width: 186mm; padding: 8px; }\n"
        "h1 { font-size: 16pt; margin: 0 0 2px; } h2 { font-size: 12pt; margin: 14px 0 4px; border-bottom: 1px solid #ccd; }\n"
        ".meta { color: #555; margin: 0 0 8px; }\n"
        ".facts { display: flex; flex-wrap: wrap; gap: 4px 18px; margin: 6px 0; }\n"
        ".chart { margin: 8px 0; break-inside: avoid; page-break-inside: avoid; }\n"
        "figcaption { font-weight: bold; font-size: 10pt; margin-bottom: 2px; }\n"
        "svg { width: 100%; height: auto; display: block; }\n"
        ".axis, .tick { stroke: #888; stroke-width: 1; } .grid { stroke: #e3e6ea; stroke-width: 1; }\n"
        ".label { font-size: 10px; fill: #555; }\n"
        ".bar.ok { fill: #2b7bb9; } .bar.short { fill: #e39b2d; }\n"
        ".rx { stroke: #b3261e; stroke-width: 1.5; stroke-dasharray: 6 4; } .rx-label { fill: #b3261e; }\n"
        ".run.followed { fill: #2e8540; } .run.missed { stroke: #b3261e; stroke-width: 2.5; fill: none; }\n"
        ".cold.ok { fill: #2b7bb9; } .cold.short { fill: #e39b2d; }\n"
        ".pain { fill: none; stroke: #6a3d9a; stroke-width: 2; } .pain-point { fill: #6a3d9a; } .pain-point.red-flag { fill: #b3261e; }\n"
        ".injury { stroke: #b3261e; stroke-width: 2; stroke-dasharray: 3 3; } .injury-label { fill: #b3261e; }\n"
        ".alert.urgent { fill: #b3261e; } .alert.warning { fill: #e39b2d; } .alert.acked { fill-opacity: 0.35; }\n"
        ".legend { font-size: 9pt; color: #555; margin: 2px 0; }\n"
        ".key { display: inline-block; width: 10px; height: 10px; margin: 0 3px 0 10px; vertical-align: -1px; }\n"
        ".key.followed { background: #2e8540; border-radius: 50%; } .key.missed { border: 2px solid #b3261e; }\n"
        ".key.cold { background: #2b7bb9; }\n"
        "table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 9.5pt; }\n"
        "caption { text-align: left; font-weight: bold; padding: 2px 0; }\n"
        "th, td { border: 1px solid #d5d9de; padding: 2px 5px; text-align: left; vertical-align: top; }\n"
        "th { background: #f1f3f5; } tr { break-inside: avoid; page-break-inside: avoid; }\n"
        "table.kv { width: auto; } table.kv th { font-weight: normal; }\n"
        "tr.missed td:last-child { color: #b3261e; }\n"
        "@media print { body { padding: 0; } h2 { break-after: avoid; } }\n";

int report_html(const ReportData *r, FILE *f) {
        char since[11], last[11], gen[CLOCK_ISO_MAX];
        Days *d;
        int k;

        d = calloc(1, sizeof *d);
        if (!d)
                return -ENOMEM;
        k = days_fill(d, r->since, r->until);
        if (k < 0) {
                free(d);
                return k;
        }
        clock_format_date(r->since, since);
        clock_format_date(r->until - 1, last);

        fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
              "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
              "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
              "<title>", f);
        esc(f, *r->profile.label ? r->profile.label : r->wrap.wrap);
        fprintf(f, ": kneewrap report %s to %s</title>\n<style>\n%s</style></head>\n<body>\n<header>\n<h1>", since, last, css);
        esc(f, *r->profile.label ? r->profile.label : "Patient (no label set)");
        fprintf(f, "</h1>\n<p class=\"meta\">Knee wrap therapy report, %s to %s (local days), generated %s</p>\n"
                   "<div class=\"facts\" id=\"profile\">", since, last, iso(r->generated_at, gen));
        fprintf(f, "<span><b>Knee:</b> %s</span>", knee_to_string(r->profile.knee) ? knee_to_string(r->profile.knee) : "not recorded");
        fputs("<span><b>Clinic reference:</b> ", f);
        esc(f, *r->profile.clinic_ref ? r->profile.clinic_ref : "none");
        fputs("</span><span><b>Wrap:</b> ", f);
        esc(f, r->wrap.wrap);
        if (*r->device.model) {
                fputs(" (", f);
                esc(f, r->device.model);
                fputs(")", f);
        }
        fprintf(f, "</span>\n<span id=\"prescription\"><b>Prescription%s:</b> cold %" PRIu32 " min at %.1f °C after each run, "
                   "at least %" PRIu32 " min rest between cold sessions; heat %" PRIu32 " min at %.1f °C, "
                   "not before %" PRIu32 " days after an injury</span></div>\n</header>\n",
                r->prescribed ? " (clinic)" : " (defaults)", r->rx.cold_s / 60, r->rx.cold_setpoint / 100.0,
                r->rx.cold_rest_s / 60, r->rx.heat_s / 60, r->rx.heat_setpoint / 100.0,
                (uint32_t) (r->rx.heat_wait_s / RULES_DAY_S));

        fputs("<h2>Compliance</h2>\n", f);
        compliance_table(f, r);
        fputs("<h2>Charts</h2>\n", f);
        chart_cold(f, r, d);
        chart_runs(f, r, d);
        chart_pain(f, r, d);
        chart_alerts(f, r, d);
        fputs("<h2>Records</h2>\n", f);
        runs_table(f, r);
        alerts_table(f, r);
        sessions_table(f, r);
        history_table(f, r);
        fputs("<p class=\"meta\">Cold counts as full when it ran at least 10 minutes (R7); a run counts as followed when "
              "a full cold session started within 60 minutes after it ended. Days are the gateway's local calendar "
              "days.</p>\n</body></html>\n", f);
        free(d);
        return ferror(f) ? -EIO : 0;
}
