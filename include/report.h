/* report: what a clinic reads about one wrap over a period: JSON, CSV (RFC 4180), FHIR R4, HTML. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "record.h"
#include "rules.h"
#include "store.h"

/*
 * report_load() reads everything once (read-only: kneewrapctl may run it next to the
 * daemon); the writers below are pure functions of what it read, so a test can feed them
 * any data. Times are written as ISO 8601 with the gateway's local offset; a period is whole
 * local days [since, until) (clock_local_period()).
 */
typedef struct ReportData {
        StoredWrap wrap;
        WrapDeviceInfo device;
        PatientProfile profile;
        RulesPrescription rx;         /* in force now */
        bool prescribed;              /* by a clinic, not the configured defaults */
        int64_t since, until;
        int64_t generated_at;
        Compliance compliance;        /* over [since, until), store_compliance() */

        SessionRecord *sessions;      /* requested in the period, refused ones included */
        size_t n_sessions;
        RunRecord *runs;              /* ended in the period */
        size_t n_runs;
        SessionRecord *run_sessions;  /* per run: the session that followed it, else its cold press, else zeroed */
        DiaryEntry *diary;            /* in the period */
        size_t n_diary;
        InjuryRecord *injuries;       /* all of the wrap's, for context */
        size_t n_injuries;
        AlertRecord *alerts;          /* raised in the period, acknowledged or not */
        size_t n_alerts;
        AuditRecord *history;         /* changes made in the period: the wrap's injuries, prescription, adoption */
        size_t n_history;
} ReportData;

int report_load(Store *s, const char *wrap, const RulesPrescription *defaults, int64_t since, int64_t until,
                int64_t now, ReportData *ret);
void report_data_done(ReportData *d);

/* The JSON of one thing, as kneewrapctl's --json and the JSON report write it (new references). */
json_t *report_profile_json(const PatientProfile *p);
json_t *report_prescription_json(const RulesPrescription *rx, bool prescribed);
json_t *report_run_json(const RunRecord *r, const SessionRecord *followed_or_press);
json_t *report_diary_json(const DiaryEntry *e);
json_t *report_injury_json(const InjuryRecord *i);
json_t *report_alert_json(const AlertRecord *a);
json_t *report_audit_json(const AuditRecord *a);

/* One document: the profile, the period, the prescription, compliance, and every record. */
json_t *report_json(const ReportData *d);

/* A FHIR R4 Bundle of type collection: Patient, Device, a Procedure per session, an
 * Observation per diary entry, a Flag per open alert (fhir.h). The change history is not in
 * it (that would be Provenance). */
json_t *report_fhir(const ReportData *d);

typedef enum ReportTable {
        REPORT_SESSIONS,
        REPORT_RUNS,
        REPORT_DIARY,
        REPORT_ALERTS,
        REPORT_HISTORY,
        _REPORT_TABLE_MAX,
} ReportTable;

int report_table_from_string(const char *s);   /* "sessions", "runs", "diary", "alerts", "history" */

/* RFC 4180: a header line, one record per line, CRLF, fields quoted where they must be. */
int report_csv(const ReportData *d, ReportTable t, FILE *f);

/* One self-contained page (inline CSS and SVG, nothing fetched) that prints on A4. */
int report_html(const ReportData *d, FILE *f);
