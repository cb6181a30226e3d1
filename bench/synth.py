"""Deterministic synthetic service catalogues for the benchmarks.

A large catalogue is the real example catalogue (``catalogue.yaml``, so the labelled tickets
still have their true service) plus synthetic services made by recombining realistic
vocabulary: product and brand names (real ones and made-up Norwegian-sounding ones), what the
service is about, what kind of thing it is, and which unit uses it, each in English and bokmål.
Every synthetic service has its own id, name, keywords and descriptions; no two are copies.

The same seed gives the same catalogue on every machine (``random.Random`` with a fixed
seed, no hashing of str), and the first services of a larger catalogue are those of a smaller
one.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from connector.catalogue import Catalogue, load_catalogue

SEED = 20251124

# fmt: off
# Real product and brand names seen in Norwegian public-sector and university IT catalogues.
REAL_BRANDS = (
    "Microsoft Teams", "Outlook", "SharePoint", "OneDrive", "Exchange", "Intune", "Entra ID",
    "Power BI", "Dynamics 365", "Azure DevOps", "Cisco AnyConnect", "Webex", "FortiClient",
    "GlobalProtect", "Zoom", "Slack", "Visma Enterprise", "Visma Flyt", "SAP", "Unit4",
    "Agresso", "Xledger", "Tripletex", "Canvas", "Blackboard", "Moodle", "itslearning",
    "Inspera", "WISEflow", "Zendesk", "Jira", "Confluence", "ServiceNow", "TOPdesk",
    "Adobe Acrobat", "Creative Cloud", "Revit", "AutoCAD", "ArcGIS", "QGIS", "Tableau", "Qlik",
    "Salesforce", "Citrix Workspace", "VMware Horizon", "ThinkPad", "EliteBook", "Canon",
    "Ricoh", "Xerox", "Konica Minolta", "iPad", "Galaxy", "Polycom", "Yealink", "Axis",
    "Milestone XProtect", "Gerica", "Profil", "CosDoc", "DIPS Arena", "Tietoevry", "Acos WebSak",
    "Elements", "Public 360", "ePhorte", "Altinn", "ID-porten", "BankID", "Feide", "Dropbox",
    "Google Workspace", "Mentimeter", "Kahoot", "Panopto", "Mediasite", "Matlab", "SPSS",
    "Stata", "NVivo", "EndNote", "Zotero", "Oracle", "PostgreSQL", "GitLab", "GitHub", "Docker",
    "Kubernetes", "Veeam", "NetApp", "Synology", "Okta", "Bitwarden", "Sophos", "CrowdStrike",
    "Splunk", "Grafana", "Zabbix", "WordPress", "Drupal", "Optimizely", "Sitecore", "Mailchimp",
    "Compilo", "Simployer", "Timegrip", "Puzzel", "Telenor", "Telia", "Verkada", "Salto",
    "Bibliofil", "Mikromarc", "Alma", "Oria", "Gat", "Visma HRM", "SvarUt", "Digipost",
    "KS Fiks", "Helsenorge", "Min Side", "Vigilo", "Transponder", "Spond", "Tidsbanken",
)
_PREFIXES = (
    "Nor", "Fjord", "Data", "Kvikk", "Vest", "Nord", "Sol", "Berg", "Tinde", "Elv", "Skog",
    "Lys", "Havn", "Vind", "Stein", "Myr", "Ask", "Lind", "Ravn", "Bre", "Flo", "Tind", "Ulv",
    "Bjørk", "Måke", "Sjø", "Fonn", "Dal", "Nes", "Vik",
)
_SUFFIXES = (
    "sys", "tech", "soft", "net", "data", "ware", "line", "flow", "portal", "desk", "hub",
    "link", "sky", "base", "logic", "sign", "plan", "pay", "doc", "cloud",
)

# What a service is about: (en, nb).
OBJECTS = (
    ("payroll", "lønn"), ("invoice approval", "fakturaattestering"), ("timesheet", "timeliste"),
    ("case management", "saksbehandling"), ("archive", "arkiv"),
    ("document management", "dokumenthåndtering"), ("room booking", "rombooking"),
    ("parking", "parkering"), ("access card", "adgangskort"), ("printing", "utskrift"),
    ("scanning", "skanning"), ("video conferencing", "videomøte"), ("telephony", "telefoni"),
    ("mobile phone", "mobiltelefon"), ("e-mail", "e-post"), ("calendar", "kalender"),
    ("file storage", "fillagring"), ("backup", "sikkerhetskopi"), ("website", "nettside"),
    ("intranet", "intranett"), ("learning platform", "læringsplattform"), ("exam", "eksamen"),
    ("student records", "studentdata"), ("patient journal", "pasientjournal"),
    ("care planning", "omsorgsplanlegging"), ("medication", "legemidler"),
    ("safety alarm", "trygghetsalarm"), ("surveillance camera", "overvåkingskamera"),
    ("geodata", "geodata"), ("map", "kart"), ("building permit", "byggesak"),
    ("procurement", "innkjøp"), ("contract", "kontrakt"), ("budget", "budsjett"),
    ("accounting", "regnskap"), ("travel expenses", "reiseregning"),
    ("recruitment", "rekruttering"), ("onboarding", "onboarding"),
    ("competence", "kompetanse"), ("survey", "spørreundersøkelse"), ("forms", "skjema"),
    ("e-signature", "e-signatur"), ("chat", "chat"), ("licence", "lisens"),
    ("software distribution", "programvaredistribusjon"), ("database", "database"),
    ("reporting", "rapportering"), ("dashboard", "dashbord"), ("integration", "integrasjon"),
    ("server", "server"), ("virtual desktop", "virtuelt skrivebord"),
    ("remote access", "fjerntilgang"), ("wireless network", "trådløst nett"),
    ("firewall", "brannmur"), ("antivirus", "antivirus"), ("identity", "identitet"),
    ("password reset", "passordbytte"), ("single sign-on", "innlogging"),
    ("library loans", "bibliotekutlån"), ("catalogue search", "katalogsøk"),
    ("research data", "forskningsdata"), ("statistics", "statistikk"),
    ("lecture capture", "forelesningsopptak"), ("projector", "projektor"),
    ("meeting room", "møterom"), ("queue system", "køsystem"), ("fleet management", "flåtestyring"),
    ("vehicle tracking", "kjøretøysporing"), ("water meter", "vannmåler"),
    ("energy monitoring", "energioppfølging"), ("school administration", "skoleadministrasjon"),
    ("kindergarten admission", "barnehageopptak"), ("property tax", "eiendomsskatt"),
    ("property register", "eiendomsregister"), ("waste collection", "renovasjon"),
    ("snow clearing", "brøyting"), ("road maintenance", "veivedlikehold"),
    ("fire alarm", "brannalarm"), ("emergency call", "nødanrop"), ("translation", "oversettelse"),
    ("newsletter", "nyhetsbrev"), ("social media", "sosiale medier"),
    ("photo archive", "fotoarkiv"), ("digital signage", "infoskjerm"), ("tablet", "nettbrett"),
    ("laptop", "bærbar pc"), ("desktop pc", "stasjonær pc"), ("docking station", "dokkingstasjon"),
    ("headset", "hodesett"), ("smart board", "smarttavle"), ("3d printer", "3d-skriver"),
    ("plotter", "plotter"), ("shift roster", "turnusplan"), ("absence", "fravær"),
    ("case portal", "saksportal"), ("public records", "postliste"),
    ("meeting minutes", "møtereferat"),
    ("political meetings", "politiske møter"), ("cemetery register", "gravregister"),
    ("dental records", "tannhelsejournal"), ("home care visits", "hjemmebesøk"),
)
KINDS = (
    ("system", "system"), ("portal", "portal"), ("app", "app"), ("client", "klient"),
    ("platform", "plattform"), ("module", "modul"), ("service", "tjeneste"),
    ("solution", "løsning"), ("tool", "verktøy"), ("register", "register"),
    ("web service", "webtjeneste"), ("self-service", "selvbetjening"),
)
UNITS = (
    ("town hall", "rådhuset"), ("health and care", "helse og omsorg"),
    ("home care", "hjemmetjenesten"), ("nursing homes", "sykehjemmene"),
    ("fire service", "brannvesenet"), ("library", "biblioteket"),
    ("technical services", "tekniske tjenester"), ("finance", "økonomiavdelingen"),
    ("HR", "personalavdelingen"), ("planning", "plan og bygg"), ("kindergartens", "barnehagene"),
    ("culture", "kultur"), ("child welfare", "barnevernet"), ("NAV office", "NAV-kontoret"),
    ("property", "eiendom"), ("water and sewage", "vann og avløp"), ("research", "forskning"),
    ("students", "studentene"), ("teaching", "undervisning"),
    ("administration", "administrasjonen"),
    ("procurement", "innkjøpsavdelingen"), ("communication", "kommunikasjon"),
    ("IT operations", "IT-drift"), ("dental health", "tannhelsetjenesten"), ("schools", "skolene"),
    ("museum", "museet"), ("harbour", "havna"), ("sports", "idrett"),
    ("refugee services", "flyktningetjenesten"), ("emergency management", "beredskap"),
)
# Everyday IT vocabulary catalogue authors put in keywords: (en, nb).
IT_TERMS = (
    ("login", "pålogging"), ("password", "passord"), ("printer", "skriver"), ("vpn", "vpn"),
    ("wifi", "trådløst"), ("email", "e-post"), ("screen", "skjerm"), ("licence", "lisens"),
    ("backup", "sikkerhetskopi"), ("update", "oppdatering"), ("installation", "installasjon"),
    ("access", "tilgang"), ("account", "konto"), ("report", "rapport"), ("export", "eksport"),
    ("import", "import"), ("synchronisation", "synkronisering"), ("error message", "feilmelding"),
    ("certificate", "sertifikat"), ("mobile", "mobil"), ("browser", "nettleser"), ("pdf", "pdf"),
    ("excel", "excel"), ("sign in", "logge inn"), ("user", "bruker"), ("role", "rolle"),
    ("permissions", "rettigheter"), ("notification", "varsel"), ("attachment", "vedlegg"),
    ("search", "søk"), ("dashboard", "oversikt"), ("approval", "godkjenning"),
    ("workflow", "arbeidsflyt"), ("template", "mal"), ("api", "api"), ("server", "server"),
    ("database", "database"), ("mfa", "tofaktor"), ("app", "app"), ("tablet", "nettbrett"),
    ("calendar", "kalender"), ("booking", "booking"), ("invoice", "faktura"),
    ("payment", "betaling"), ("archive", "arkiv"), ("scanner", "skanner"), ("camera", "kamera"),
    ("sensor", "sensor"), ("alarm", "alarm"), ("integration", "integrasjon"),
)
AUDIENCES = (
    ("employees", "ansatte"), ("case officers", "saksbehandlere"), ("managers", "ledere"),
    ("students", "studenter"), ("citizens", "innbyggere"), ("nurses", "sykepleiere"),
    ("teachers", "lærere"), ("contractors", "leverandører"), ("politicians", "politikere"),
)
ACTIONS = (
    ("registration", "registrering"), ("follow-up", "oppfølging"), ("approval", "godkjenning"),
    ("reporting", "rapportering"), ("ordering", "bestilling"), ("planning", "planlegging"),
    ("logging", "logging"), ("sharing", "deling"), ("signing", "signering"),
    ("archiving", "arkivering"), ("invoicing", "fakturering"), ("scheduling", "timeplanlegging"),
)
TEAMS = (
    "Workplace team", "Identity team", "Collaboration team", "Network team",
    "Business applications team", "Health systems team", "Infrastructure team", "Web team",
    "Integration team", "Data platform team",
)
SLAS = (
    {"response": "30m", "resolution": "4h"}, {"response": "1h", "resolution": "8h"},
    {"response": "2h", "resolution": "1d"}, {"response": "4h", "resolution": "2d"},
    {"response": "1d", "resolution": "1w"},
)
_EN_TEMPLATES = (
    "{brand} {kind} for {object} in {unit}: {k1}, {k2} and {k3} for {audience}.",
    "{Object} for {audience} in {unit} with {brand}; covers {action}, {k1} and {k2}.",
    "The {unit} {object} {kind} ({brand}): {action} and {action2}, {k1}, {k3}.",
    "{brand} handles {object} and {action} for {audience}. Includes {k1}, {k2} and {k3}.",
)
_NB_TEMPLATES = (
    "{brand} {kind} for {object} i {unit}: {k1}, {k2} og {k3} for {audience}.",
    "{Object} for {audience} i {unit} med {brand}; dekker {action}, {k1} og {k2}.",
    "{Kind} for {object} i {unit} ({brand}): {action} og {action2}, {k1}, {k3}.",
    "{brand} brukes til {object} og {action} for {audience}. Omfatter {k1}, {k2} og {k3}.",
)
# fmt: on


def _slug(text: str) -> str:
    text = text.lower().translate(str.maketrans({"æ": "ae", "ø": "o", "å": "a"}))
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def brands(rng: random.Random) -> list[str]:
    """Real brands plus made-up ones (``Fjordflow``, ``Ravnlink``), in a seeded order."""
    made_up = [p + s for p in _PREFIXES for s in _SUFFIXES]
    rng.shuffle(made_up)
    return list(REAL_BRANDS) + made_up[:400]


def synthetic_services(count: int, seed: int = SEED, start: int = 1) -> list[dict[str, Any]]:
    """``count`` synthetic services as catalogue-format dicts (unique id, name, keywords)."""
    rng = random.Random(seed)
    pool = brands(rng)
    combos = len(pool) * len(OBJECTS) * len(UNITS)
    if count > combos:
        raise ValueError(f"at most {combos} distinct synthetic services")
    used: set[int] = set()
    out = []
    for number in range(start, start + count):
        pick = rng.randrange(combos)
        while pick in used:  # drawn one at a time so a larger catalogue extends a smaller one
            pick = rng.randrange(combos)
        used.add(pick)
        b, rest = divmod(pick, len(OBJECTS) * len(UNITS))
        o, u = divmod(rest, len(UNITS))
        brand, (obj_en, obj_nb), (unit_en, unit_nb) = pool[b], OBJECTS[o], UNITS[u]
        kind_en, kind_nb = rng.choice(KINDS)
        aud_en, aud_nb = rng.choice(AUDIENCES)
        (act_en, act_nb), (act2_en, act2_nb) = rng.sample(ACTIONS, 2)
        terms = rng.sample(IT_TERMS, rng.randint(3, 5))
        values_en = {
            "brand": brand,
            "kind": kind_en,
            "object": obj_en,
            "Object": obj_en.capitalize(),
            "unit": unit_en,
            "audience": aud_en,
            "action": act_en,
            "action2": act2_en,
            "k1": terms[0][0],
            "k2": terms[1][0],
            "k3": terms[2][0],
        }
        values_nb = {
            "brand": brand,
            "kind": kind_nb,
            "Kind": kind_nb.capitalize(),
            "object": obj_nb,
            "Object": obj_nb.capitalize(),
            "unit": unit_nb,
            "audience": aud_nb,
            "action": act_nb,
            "action2": act2_nb,
            "k1": terms[0][1],
            "k2": terms[1][1],
            "k3": terms[2][1],
        }
        keywords_en = [brand.lower(), obj_en, *(t[0] for t in terms[1:])]
        keywords_nb = [brand.lower(), obj_nb, *(t[1] for t in terms[1:])]
        service: dict[str, Any] = {
            "id": f"{_slug(brand)}-{_slug(obj_en)}-{number:05d}",
            "name": {
                "en": f"{brand} {obj_en} {kind_en} ({unit_en})",
                "nb": f"{brand} {obj_nb} ({unit_nb})",
            },
            "description": {
                "en": rng.choice(_EN_TEMPLATES).format(**values_en),
                "nb": rng.choice(_NB_TEMPLATES).format(**values_nb),
            },
            "keywords": {
                "en": list(dict.fromkeys(keywords_en)),
                "nb": list(dict.fromkeys(keywords_nb)),
            },
            "owner": rng.choice(TEAMS),
        }
        if rng.random() < 0.08:
            service["supported"] = False
            service["reason"] = {
                "en": f"{brand} is no longer supported by IT.",
                "nb": f"{brand} støttes ikke lenger av IT.",
            }
            service["alternative"] = {
                "en": f"Use the standard {obj_en} {kind_en} instead.",
                "nb": f"Bruk standard {obj_nb} i stedet.",
            }
        else:
            service["sla"] = dict(rng.choice(SLAS))
        out.append(service)
    return out


def catalogue_of_size(real: Path, size: int, seed: int = SEED) -> Catalogue:
    """The real catalogue, padded with synthetic services up to ``size`` services."""
    base = load_catalogue(real)
    if size <= len(base.services):
        return base
    data = base.model_dump(mode="json", exclude_none=True)
    data["services"] += synthetic_services(size - len(base.services), seed)
    return Catalogue.model_validate(data)
