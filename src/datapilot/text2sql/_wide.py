# ruff: noqa: E501  (the areas are a data table, one entity per item)
"""A generated wide schema, for measuring schema linking where it matters: 30 business areas of 10
tables each (300 tables), joined by foreign keys inside each area, with questions whose gold tables
are known (one table, or a table and its parent).

Areas share generic words on purpose (``status``, ``amount``, ``created_at``, ``name``), as real
warehouses do; a question names its subject the way a person would (``loans``, ``the library``),
never the table (``lib_loans``).
"""

from __future__ import annotations

from dataclasses import dataclass

from datapilot.datasource import ColumnInfo, ForeignKey, TableInfo

# area prefix, area words, and its ten entities: (plural noun, parent index or None, own columns)
AREAS: list[tuple[str, str, list[tuple[str, int | None, tuple[str, ...]]]]] = [
    ("lib", "library", [("members", None, ("full_name", "joined_on")), ("books", None, ("title", "author", "isbn")),
                        ("loans", 0, ("loaned_on", "due_on")), ("copies", 1, ("shelf", "condition")),
                        ("fines", 2, ("amount", "paid")), ("branches", None, ("branch_name", "city")),
                        ("reservations", 0, ("reserved_on",)), ("authors", None, ("author_name", "country")),
                        ("genres", None, ("genre_name",)), ("events", 5, ("event_title", "event_date"))]),
    ("hr", "human resources", [("employees", None, ("first_name", "last_name", "hire_date", "salary")),
                               ("departments", None, ("department_name", "budget")), ("payslips", 0, ("gross_pay", "pay_date")),
                               ("leave_requests", 0, ("start_date", "days")), ("job_titles", None, ("title_name", "grade")),
                               ("trainings", None, ("course_name", "hours")), ("enrollments", 5, ("completed",)),
                               ("reviews", 0, ("rating", "review_date")), ("benefits", None, ("benefit_name", "cost")),
                               ("offices", None, ("office_city", "capacity"))]),
    ("crm", "sales pipeline", [("accounts", None, ("account_name", "industry")), ("contacts", 0, ("contact_name", "email")),
                               ("opportunities", 0, ("stage", "expected_revenue", "close_date")),
                               ("activities", 1, ("activity_type", "activity_date")), ("campaigns", None, ("campaign_name", "spend")),
                               ("leads", 4, ("lead_source", "score")), ("quotes", 2, ("quote_total",)),
                               ("territories", None, ("territory_name",)), ("sales_reps", 7, ("rep_name", "quota")),
                               ("competitors", None, ("competitor_name",))]),
    ("inv", "warehouse inventory", [("warehouses", None, ("warehouse_name", "city")), ("products", None, ("sku", "product_name")),
                                    ("stock_levels", 0, ("quantity_on_hand",)), ("suppliers", None, ("supplier_name", "country")),
                                    ("purchase_orders", 3, ("ordered_on", "total_cost")), ("receipts", 4, ("received_on",)),
                                    ("stock_moves", 0, ("moved_on", "quantity")), ("bins", 0, ("aisle", "rack")),
                                    ("counts", 7, ("counted_on", "counted_quantity")), ("returns", 1, ("reason",))]),
    ("fin", "accounting", [("ledgers", None, ("ledger_name",)), ("accounts_chart", 0, ("account_code", "account_type")),
                           ("journal_entries", 1, ("entry_date", "debit", "credit")), ("invoices", None, ("invoice_number", "amount_due", "due_date")),
                           ("payments", 3, ("paid_on", "amount_paid")), ("budgets", None, ("fiscal_year", "planned_amount")),
                           ("cost_centers", None, ("center_name",)), ("expenses", 6, ("expense_date", "expense_amount")),
                           ("tax_rates", None, ("tax_name", "rate")), ("currencies", None, ("currency_code", "exchange_rate"))]),
    ("sup", "customer support", [("tickets", None, ("subject", "priority", "opened_at")), ("agents", None, ("agent_name", "team")),
                                 ("replies", 0, ("reply_text", "sent_at")), ("slas", None, ("sla_name", "response_hours")),
                                 ("satisfaction_surveys", 0, ("csat_score",)), ("macros", None, ("macro_name",)),
                                 ("escalations", 0, ("escalated_at", "level")), ("knowledge_articles", None, ("article_title", "views")),
                                 ("chat_sessions", 1, ("started_at", "duration_seconds")), ("ticket_tags", 0, ("tag",))]),
    ("mkt", "marketing", [("ad_campaigns", None, ("campaign_title", "channel", "budget")), ("ad_groups", 0, ("group_name",)),
                          ("ads", 1, ("headline", "clicks", "impressions")), ("newsletters", None, ("newsletter_subject", "sent_on")),
                          ("subscribers", None, ("subscriber_email", "subscribed_on")), ("unsubscribes", 4, ("unsubscribed_on",)),
                          ("landing_pages", None, ("page_url", "visits")), ("conversions", 6, ("converted_at", "value")),
                          ("influencers", None, ("handle", "followers")), ("promo_codes", None, ("code", "discount_percent"))]),
    ("mfg", "manufacturing", [("plants", None, ("plant_name", "region")), ("machines", 0, ("machine_model", "installed_on")),
                              ("work_orders", 1, ("planned_quantity", "due_on")), ("production_runs", 2, ("produced_quantity", "run_date")),
                              ("defects", 3, ("defect_type", "defect_count")), ("maintenance_jobs", 1, ("job_date", "downtime_hours")),
                              ("bills_of_materials", None, ("bom_name",)), ("components", 6, ("component_name", "unit_cost")),
                              ("shifts", 0, ("shift_name", "start_hour")), ("operators", 8, ("operator_name",))]),
    ("hosp", "hospital", [("patients", None, ("patient_name", "birth_date")), ("doctors", None, ("doctor_name", "specialty")),
                          ("admissions", 0, ("admitted_on", "discharged_on")), ("wards", None, ("ward_name", "beds")),
                          ("prescriptions", 2, ("drug_name", "dose_mg")), ("lab_tests", 0, ("test_name", "result_value")),
                          ("surgeries", 1, ("procedure_name", "surgery_date")), ("nurses", 3, ("nurse_name",)),
                          ("bills", 2, ("bill_total",)), ("insurers", None, ("insurer_name",))]),
    ("edu", "school", [("students", None, ("student_name", "grade_level")), ("teachers", None, ("teacher_name", "subject")),
                       ("classes", 1, ("class_name", "room")), ("class_enrollments", 2, ("enrolled_on",)),
                       ("exams", 2, ("exam_date", "max_score")), ("exam_results", 4, ("score",)),
                       ("attendance", 0, ("attended_on", "present")), ("parents", None, ("parent_name", "phone")),
                       ("clubs", None, ("club_name",)), ("scholarships", 0, ("scholarship_amount",))]),
    ("ship", "shipping and logistics", [("shipments", None, ("tracking_number", "shipped_on", "weight_kg")),
                                        ("carriers", None, ("carrier_name",)), ("routes", 1, ("origin", "destination")),
                                        ("deliveries", 0, ("delivered_on", "signed_by")), ("trucks", 1, ("plate", "capacity_kg")),
                                        ("drivers", 4, ("driver_name", "license_class")), ("depots", None, ("depot_city",)),
                                        ("freight_rates", 2, ("rate_per_kg",)), ("customs_declarations", 0, ("declared_value",)),
                                        ("damages", 3, ("damage_cost",))]),
    ("hotel", "hotel", [("guests", None, ("guest_name", "nationality")), ("rooms", None, ("room_number", "room_type", "nightly_rate")),
                        ("bookings", 0, ("check_in", "check_out")), ("stays", 2, ("nights",)), ("housekeeping_tasks", 1, ("cleaned_on",)),
                        ("minibar_charges", 3, ("charge_amount",)), ("loyalty_accounts", 0, ("points",)),
                        ("spa_appointments", 0, ("treatment", "appointment_time")), ("restaurant_orders", 0, ("order_total",)),
                        ("room_reviews", 1, ("stars",))]),
    ("air", "airline", [("flights", None, ("flight_number", "departure_time")), ("airports", None, ("airport_code", "airport_city")),
                        ("aircraft", None, ("tail_number", "seat_count")), ("passengers", None, ("passenger_name", "passport")),
                        ("tickets_sold", 3, ("fare", "cabin")), ("boarding_passes", 4, ("seat",)),
                        ("crew_members", None, ("crew_name", "role")), ("baggage", 3, ("bag_weight_kg",)),
                        ("delays", 0, ("delay_minutes", "cause")), ("frequent_flyers", 3, ("miles",))]),
    ("bank", "retail banking", [("customers_bank", None, ("holder_name", "opened_on")), ("bank_accounts", 0, ("iban", "balance")),
                                ("transactions", 1, ("posted_on", "transaction_amount")), ("loans_bank", 0, ("principal", "interest_rate")),
                                ("loan_repayments", 3, ("repaid_on", "repaid_amount")), ("cards", 1, ("card_number", "expires_on")),
                                ("atms", None, ("atm_location",)), ("withdrawals", 6, ("withdrawn_amount",)),
                                ("branches_bank", None, ("branch_city",)), ("fraud_alerts", 2, ("alert_reason",))]),
    ("ins", "insurance", [("policies", None, ("policy_number", "premium", "start_date")), ("policyholders", None, ("holder", "age")),
                          ("claims", 0, ("claim_amount", "filed_on")), ("adjusters", None, ("adjuster_name",)),
                          ("claim_payments", 2, ("payout",)), ("coverages", 0, ("coverage_type", "limit_amount")),
                          ("brokers", None, ("broker_name", "commission_rate")), ("renewals", 0, ("renewed_on",)),
                          ("inspections", 2, ("inspection_date", "finding")), ("risk_scores", 1, ("risk_score",))]),
    ("re", "real estate", [("properties", None, ("address", "square_meters", "listed_price")), ("agents_re", None, ("agent",)),
                           ("listings", 0, ("listed_on", "asking_price")), ("viewings", 2, ("viewed_on",)),
                           ("offers", 2, ("offer_price",)), ("leases", 0, ("monthly_rent", "lease_start")),
                           ("tenants", None, ("tenant_name",)), ("maintenance_requests", 0, ("issue", "requested_on")),
                           ("neighborhoods", None, ("neighborhood_name", "median_income")), ("valuations", 0, ("valued_at",))]),
    ("ecom", "online store", [("shoppers", None, ("shopper_email", "signed_up_on")), ("catalog_items", None, ("item_title", "list_price")),
                              ("carts", 0, ("created_at",)), ("cart_lines", 2, ("quantity",)), ("web_orders", 0, ("placed_at", "order_total")),
                              ("web_order_lines", 4, ("line_quantity", "line_price")), ("product_reviews", 1, ("review_stars", "review_text")),
                              ("wishlists", 0, ("wishlist_name",)), ("refunds", 4, ("refund_amount",)),
                              ("coupons", None, ("coupon_code", "percent_off"))]),
    ("rest", "restaurant", [("dishes", None, ("dish_name", "menu_price")), ("tables_rest", None, ("table_number", "seats")),
                            ("diner_orders", 1, ("ordered_at",)), ("order_dishes", 2, ("servings",)),
                            ("ingredients", None, ("ingredient_name", "unit_price")), ("recipes", 0, ("grams",)),
                            ("waiters", None, ("waiter_name",)), ("tips", 2, ("tip_amount",)),
                            ("table_reservations", 1, ("reserved_for", "party_size")), ("food_suppliers", None, ("vendor_name",))]),
    ("gym", "fitness club", [("gym_members", None, ("member_name", "membership_type")), ("trainers", None, ("trainer_name",)),
                             ("workouts", 0, ("workout_date", "calories")), ("classes_gym", 1, ("class_title", "capacity")),
                             ("class_bookings", 3, ("booked_on",)), ("memberships", 0, ("monthly_fee", "renewal_date")),
                             ("equipment", None, ("equipment_name", "purchase_date")), ("equipment_repairs", 6, ("repair_cost",)),
                             ("body_measurements", 0, ("weight_kg", "body_fat")), ("personal_sessions", 1, ("session_price",))]),
    ("farm", "farm", [("fields", None, ("field_name", "hectares")), ("crops", None, ("crop_name",)),
                      ("plantings", 0, ("planted_on",)), ("harvests", 2, ("harvested_on", "yield_tons")),
                      ("livestock", None, ("animal_type", "head_count")), ("feedings", 4, ("feed_kg",)),
                      ("tractors", None, ("tractor_model",)), ("fuel_logs", 6, ("liters",)),
                      ("weather_readings", 0, ("rainfall_mm", "reading_date")), ("crop_sales", 3, ("sale_price",))]),
    ("energy", "power utility", [("meters", None, ("meter_serial", "installed_at")), ("readings", 0, ("kwh", "read_at")),
                                 ("tariffs", None, ("tariff_name", "price_per_kwh")), ("utility_bills", 0, ("billed_amount",)),
                                 ("outages", None, ("outage_start", "affected_homes")), ("substations", None, ("substation_name",)),
                                 ("transformers", 5, ("rating_kva",)), ("solar_panels", 0, ("panel_capacity_kw",)),
                                 ("crews", None, ("crew",)), ("repairs", 4, ("repair_hours",))]),
    ("tel", "telecom", [("subscribers_tel", None, ("msisdn", "activated_on")), ("plans", None, ("plan_name", "monthly_price")),
                        ("subscriptions", 0, ("started_on",)), ("calls", 0, ("call_seconds", "called_at")),
                        ("data_sessions", 0, ("megabytes",)), ("towers", None, ("tower_code", "tower_city")),
                        ("handsets", None, ("handset_model",)), ("roaming_charges", 0, ("roaming_amount",)),
                        ("porting_requests", 0, ("ported_on",)), ("network_faults", 5, ("fault_type",))]),
    ("media", "streaming service", [("titles", None, ("title_name", "release_year")), ("viewers", None, ("viewer_email", "country")),
                                    ("plays", 1, ("played_at", "minutes_watched")), ("episodes", 0, ("episode_number", "runtime")),
                                    ("ratings", 1, ("rating_value",)), ("media_subscriptions", 1, ("tier", "price")),
                                    ("studios", None, ("studio_name",)), ("licenses", 0, ("license_fee", "expires")),
                                    ("watchlists", 1, ("added_on",)), ("genres_media", None, ("genre",))]),
    ("gov", "city services", [("citizens", None, ("citizen_name", "district")), ("permits", 0, ("permit_type", "issued_on")),
                              ("inspections_gov", 1, ("inspected_on", "passed")), ("parking_tickets", 0, ("fine_amount",)),
                              ("potholes", None, ("street", "reported_on")), ("work_crews", None, ("crew_name",)),
                              ("service_requests", 0, ("request_type", "opened_on")), ("budgets_gov", None, ("department", "amount")),
                              ("council_meetings", None, ("meeting_date",)), ("votes", 8, ("motion", "result"))]),
    ("proj", "project management", [("projects", None, ("project_name", "deadline")), ("tasks", 0, ("task_title", "estimate_hours")),
                                    ("timesheets", 1, ("hours_logged", "logged_on")), ("milestones", 0, ("milestone_name", "due")),
                                    ("risks", 0, ("risk_title", "probability")), ("team_members", None, ("member",)),
                                    ("assignments", 1, ("assigned_on",)), ("project_budgets", 0, ("approved_amount",)),
                                    ("comments", 1, ("comment_text",)), ("sprints", 0, ("sprint_number",))]),
    ("auto", "car dealership", [("vehicles", None, ("vin", "make", "model_year")), ("dealers", None, ("dealer_name",)),
                                ("test_drives", 0, ("driven_on",)), ("car_sales", 0, ("sale_amount", "sold_on")),
                                ("trade_ins", 3, ("trade_value",)), ("service_visits", 0, ("service_type", "visit_date")),
                                ("parts", None, ("part_number", "part_price")), ("warranties", 0, ("warranty_end",)),
                                ("financing", 3, ("apr", "term_months")), ("salespeople", 1, ("salesperson",))]),
    ("event", "event tickets", [("venues", None, ("venue_name", "capacity")), ("concerts", 0, ("artist", "concert_date")),
                                ("ticket_sales", 1, ("seat_section", "price_paid")), ("buyers", None, ("buyer_email",)),
                                ("promoters", None, ("promoter_name",)), ("merch_sales", 1, ("merch_item", "merch_revenue")),
                                ("security_staff", 0, ("guard_name",)), ("refund_requests", 2, ("refund_reason",)),
                                ("sponsors", None, ("sponsor_name", "sponsorship")), ("setlists", 1, ("song",))]),
    ("lab", "research lab", [("experiments", None, ("hypothesis", "started")), ("researchers", None, ("researcher_name", "field")),
                             ("samples", 0, ("sample_code", "collected_on")), ("measurements", 2, ("measured_value", "unit")),
                             ("instruments", None, ("instrument_name",)), ("calibrations", 4, ("calibrated_on",)),
                             ("grants", None, ("grant_title", "grant_amount")), ("publications", 1, ("paper_title", "citations")),
                             ("reagents", None, ("reagent_name", "stock_ml")), ("protocols", 0, ("protocol_name",))]),
    ("vet", "veterinary clinic", [("pets", None, ("pet_name", "species", "breed")), ("owners", None, ("owner_name", "owner_phone")),
                                  ("vet_visits", 0, ("visit_reason", "visited_on")), ("vaccinations", 0, ("vaccine", "given_on")),
                                  ("vets", None, ("vet_name",)), ("treatments", 2, ("treatment_cost",)),
                                  ("pet_insurance", 0, ("insurer",)), ("boarding", 0, ("nights_boarded",)),
                                  ("medicines", None, ("medicine_name", "medicine_price")), ("grooming", 0, ("groomed_on",))]),
    ("sport", "sports league", [("teams", None, ("team_name", "home_city")), ("players", 0, ("player_name", "position")),
                                ("matches", 0, ("match_date", "home_score", "away_score")), ("goals", 2, ("minute",)),
                                ("stadiums", None, ("stadium_name", "seats")), ("coaches", 0, ("coach_name",)),
                                ("injuries", 1, ("injury", "weeks_out")), ("transfers", 1, ("transfer_fee",)),
                                ("referees", None, ("referee_name",)), ("standings", 0, ("points",))]),
]  # fmt: skip


@dataclass(slots=True, frozen=True)
class LinkingCase:
    question: str
    gold: tuple[str, ...]


def _human(name: str) -> str:
    return name.replace("_", " ")


def wide_schema() -> list[TableInfo]:
    """300 tables: ``{prefix}_{entity}``, an id each, their own columns plus the generic ones, and a
    foreign key to their parent entity."""
    tables = []
    for prefix, _, entities in AREAS:
        for noun, parent, columns in entities:
            cols = [ColumnInfo(f"{_singular(noun)}_id", "INTEGER", primary_key=True)]
            cols += [ColumnInfo(c, _type_of(c)) for c in columns]
            cols += [ColumnInfo("status", "TEXT"), ColumnInfo("created_at", "TEXT")]
            fks = []
            if parent is not None:
                ref = entities[parent][0]
                key = f"{_singular(ref)}_id"
                cols.append(ColumnInfo(key, "INTEGER"))
                fks.append(ForeignKey([key], f"{prefix}_{ref}", [key]))
            tables.append(TableInfo(f"{prefix}_{noun}", cols, fks))
    return tables


def linking_cases() -> list[LinkingCase]:
    """Three questions per area: one about one entity and a column of its own, the same without the
    area's name, and one that joins an entity to its parent (both tables are gold)."""
    cases = []
    for prefix, area, entities in AREAS:
        noun, _, columns = entities[0]
        cases.append(LinkingCase(f"In the {area}, how many {_human(noun)} have a {_human(columns[-1])} set?",
                                 (f"{prefix}_{noun}",)))  # fmt: skip
        # Without the area: the column has to tell which area's table it is.
        cases.append(LinkingCase(f"What is the {_human(columns[-1])} of each of the {_human(noun)}?",
                                 (f"{prefix}_{noun}",)))  # fmt: skip
        child = next((e for e in entities if e[1] is not None), None)
        if child is not None:
            parent = entities[child[1]][0]  # type: ignore[index]
            cases.append(
                LinkingCase(
                    f"For each of the {area}'s {_human(parent)}, what is the total {_human(child[2][-1])} of its "
                    f"{_human(child[0])}?",
                    (f"{prefix}_{child[0]}", f"{prefix}_{parent}"),
                )
            )
    return cases


def _singular(noun: str) -> str:
    for suffix, repl in (("ies", "y"), ("ses", "s"), ("s", "")):
        if noun.endswith(suffix) and not noun.endswith("ss"):
            return noun[: -len(suffix)] + repl
    return noun


def _type_of(column: str) -> str:
    if column.endswith(("_on", "_at", "_date", "date", "_time", "time")):
        return "TEXT"
    numeric = ("amount", "price", "cost", "total", "quantity", "score", "rate", "hours", "kg", "count", "salary",
               "budget", "fee", "points", "miles", "value", "days", "capacity", "seats", "views", "visits")  # fmt: skip
    return "REAL" if any(w in column for w in numeric) else "TEXT"
